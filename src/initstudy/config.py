"""Composing and validating the study configuration before any expensive or persistent work.

``params.yaml`` at the repository root is Hydra's primary config; ``conf/`` holds the groups. Every entry
point runs from the repository root (DVC does so for its stages). :func:`validate` turns every bad value
into a one-line :class:`ConfigError` that names the key, the value and what is allowed.

This module does not import torch (nor anything that does): entry points compose the config and apply its
numerics profile before torch starts (see ``initstudy.numerics``).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

PRIMARY_CONFIG = "params"
CONFIG_GROUPS_DIR = "conf"


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message is one line."""


def repo_root() -> Path:
    """The study's root folder (holding params.yaml): $INITSTUDY_ROOT, else the working directory."""
    return Path(os.environ.get("INITSTUDY_ROOT", os.getcwd())).resolve()


def group_options(group: str, root: Path | None = None) -> list[str]:
    folder = (root or repo_root()) / CONFIG_GROUPS_DIR / group
    return sorted(path.stem for path in folder.glob("*.yaml"))


def check_params_file(root: Path | None = None) -> None:
    """Fail with one line if params.yaml is missing or not a YAML mapping (Hydra's message is long)."""
    path = (root or repo_root()) / f"{PRIMARY_CONFIG}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the study's root folder (the one holding params.yaml)")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path.name} is not valid YAML{where}: {problem}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path.name} must be a YAML mapping, got {type(content).__name__}")


def one_line(error: Exception, root: Path | None = None) -> str:
    """Hydra's composition errors as one line, listing the allowed options where Hydra lists them."""
    text = str(error).strip()
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return (
            f"unknown {group.replace('/', '.')} {option!r}; allowed: {', '.join(group_options(group, root))}"
        )
    unknown_key = re.search(r"Could not override '([^']+)'", text)
    if unknown_key:
        return f"unknown config key {unknown_key.group(1)!r} (prefix with + only to add a new key on purpose)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:400]


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose params.yaml + conf/ with Hydra's compose API; errors become :class:`ConfigError`."""
    root = repo_root()
    check_params_file(root)
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3", job_name="initstudy"):
            return compose(PRIMARY_CONFIG, overrides=list(overrides), return_hydra_config=return_hydra_config)
    except HydraException as error:
        raise ConfigError(one_line(error, root)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML in the config: {str(error).splitlines()[0]}") from None


# ---- validation ---------------------------------------------------------------------------------------

TOP_LEVEL_KEYS = {
    "seed", "init", "model", "optimizer", "data", "trainer", "logger", "download", "hydra", "numerics"
}  # fmt: skip
SECTION_KEYS = {
    "model": {"_target_", "input_size", "num_classes", "hidden_sizes", "activation", "depth", "width"},
    "data": {"root", "batch_size", "train_size", "val_fraction", "eval_batch_size"},
    "trainer": {
        "max_epochs",
        "accelerator",
        "log_every_n_steps",
        "num_threads",
        "stop_on_divergence",
        "steps_per_chunk",
        "precision",
    },
    "logger": {"tracking_uri", "experiment_name", "offline"},
}


# Lightning's seed range (seed_everything): a 32-bit unsigned integer.
MAX_SEED = 2**32 - 1
# What this study's training loop honours: full float32 (Lightning's names for it). Mixed precision needs
# Lightning's manual_backward path, which the chunked loop does not take yet; float64 would leave the
# device-resident float32 data unconverted.
PRECISIONS = (32, "32", "32-true")
DETERMINISTIC = (True, False, "warn")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid {key}={value!r}: {allowed}")


def _check_keys(section: str, node: Any, allowed: set[str]) -> None:
    if not isinstance(node, DictConfig):
        _fail(section, node, "must be a mapping")
    for key in node:
        if key not in allowed:
            raise ConfigError(
                f"unknown config key '{section}.{key}'; allowed in {section}: {', '.join(sorted(allowed))}"
            )


def _constructor_keys(node: DictConfig, section: str) -> set[str]:
    target = node.get("_target_")
    if not isinstance(target, str):
        raise ConfigError(f"{section} has no _target_; pick an option: {', '.join(group_options(section))}")
    try:
        parameters = inspect.signature(get_class(target)).parameters
    except Exception as error:
        raise ConfigError(f"{section}._target_ {target!r} cannot be imported: {error}") from None
    return set(parameters) | {"_target_", "_partial_"}


def validate(cfg: DictConfig) -> None:
    """Check every value a run depends on; raise :class:`ConfigError` naming the first bad one."""
    from initstudy.model import ACTIVATIONS  # imports torch: not at module level (see the docstring)

    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"unknown config key {key!r}; allowed top-level keys: {', '.join(sorted(TOP_LEVEL_KEYS))}"
            )
    for section, allowed in SECTION_KEYS.items():
        _check_keys(section, cfg[section], allowed)
    _check_keys("init", cfg.init, _constructor_keys(cfg.init, "init"))
    _check_keys("optimizer", cfg.optimizer, _constructor_keys(cfg.optimizer, "optimizer"))
    _check_keys("numerics", cfg.numerics, _constructor_keys(cfg.numerics, "numerics"))

    if not _is_int(cfg.seed) or not 0 <= cfg.seed <= MAX_SEED:
        _fail("seed", cfg.seed, f"must be an integer in [0, {MAX_SEED}] (Lightning's seed range)")
    if cfg.init.get("name") not in group_options("init"):
        _fail("init.name", cfg.init.get("name"), f"must be one of {', '.join(group_options('init'))}")

    hidden = cfg.model.hidden_sizes
    depth, width = cfg.model.get("depth"), cfg.model.get("width")
    if hidden is None and (depth is not None or width is not None):
        for key, value in (("model.depth", depth), ("model.width", width)):
            if not _is_int(value) or value <= 0:
                _fail(key, value, "must be a positive integer when model.hidden_sizes is null")
        hidden = ListConfig([width] * depth)
    elif depth is not None or width is not None:
        raise ConfigError(
            f"model.hidden_sizes={OmegaConf.to_container(hidden)} and model.depth={depth}/model.width={width} "
            "both given; set model.hidden_sizes=null to use depth and width"
        )
    if not isinstance(hidden, ListConfig) or len(hidden) == 0:
        _fail(
            "model.hidden_sizes",
            OmegaConf.to_container(hidden) if hidden is not None else None,
            "must be a non-empty list of positive integers, e.g. [256,128]",
        )
    for size in hidden:
        if not _is_int(size) or size <= 0:
            _fail(
                "model.hidden_sizes", OmegaConf.to_container(hidden), "every size must be a positive integer"
            )
    if cfg.model.activation not in ACTIVATIONS:
        _fail("model.activation", cfg.model.activation, f"must be one of {', '.join(ACTIVATIONS)}")

    for key in ("input_size", "num_classes"):
        value = cfg.model.get(key)
        if not _is_int(value) or value <= 0:
            _fail(f"model.{key}", value, "must be a positive integer")
    _validate_optimizer(cfg.optimizer)
    if not _is_int(cfg.data.batch_size) or cfg.data.batch_size <= 0:
        _fail("data.batch_size", cfg.data.batch_size, "must be a positive integer")
    if cfg.data.train_size is not None and (not _is_int(cfg.data.train_size) or cfg.data.train_size <= 0):
        _fail("data.train_size", cfg.data.train_size, "must be a positive integer or null (all 60,000)")
    if not _is_number(cfg.data.val_fraction) or not 0 <= cfg.data.val_fraction < 1:
        _fail("data.val_fraction", cfg.data.val_fraction, "must be a number in [0, 1)")
    if not _is_int(cfg.trainer.max_epochs) or cfg.trainer.max_epochs <= 0:
        _fail("trainer.max_epochs", cfg.trainer.max_epochs, "must be a positive integer")
    if not _is_int(cfg.trainer.log_every_n_steps) or cfg.trainer.log_every_n_steps <= 0:
        _fail("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, "must be a positive integer")
    if not _is_int(cfg.trainer.steps_per_chunk) or cfg.trainer.steps_per_chunk <= 0:
        _fail("trainer.steps_per_chunk", cfg.trainer.steps_per_chunk, "must be a positive integer")
    ebs = cfg.data.eval_batch_size
    if not _is_int(ebs) or ebs <= 0:
        _fail("data.eval_batch_size", ebs, "must be a positive integer")
    if cfg.trainer.precision not in PRECISIONS:
        _fail("trainer.precision", cfg.trainer.precision,
              f"allowed: {', '.join(map(str, PRECISIONS))} (this study trains in float32)")  # fmt: skip
    deterministic = cfg.numerics.get("deterministic")
    if deterministic not in DETERMINISTIC or not isinstance(deterministic, bool | str):
        _fail("numerics.deterministic", deterministic, "allowed: true, false, warn")
    if not isinstance(cfg.trainer.stop_on_divergence, bool):
        _fail("trainer.stop_on_divergence", cfg.trainer.stop_on_divergence, "must be true or false")
    _validate_logger(cfg.logger)
    if cfg.trainer.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        _fail("trainer.accelerator", cfg.trainer.accelerator, "must be one of auto, cpu, gpu, cuda")
    threads = cfg.trainer.num_threads
    if threads is not None and (not _is_int(threads) or threads <= 0):
        _fail("trainer.num_threads", threads, "must be a positive integer or null")
    validate_numerics(cfg)
    try:
        init_kwargs = {k: v for k, v in cfg.init.items() if k != "_target_"}
        get_class(cfg.init._target_)(**init_kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid init for {cfg.init.name!r}: {error}") from None


def _validate_optimizer(optimizer: DictConfig) -> None:
    lr = optimizer.get("lr")
    if not _is_number(lr) or not lr > 0:
        _fail("optimizer.lr", lr, "must be a positive number")
    betas = optimizer.get("betas")
    if betas is not None and (
        not isinstance(betas, ListConfig)
        or len(betas) != 2
        or not all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        _fail("optimizer.betas", OmegaConf.to_container(betas) if isinstance(betas, ListConfig) else betas,
              "must be two numbers in [0, 1)")  # fmt: skip
    for key, strict in (("eps", True), ("weight_decay", False), ("momentum", False)):
        value = optimizer.get(key)
        if value is None:
            continue
        if not _is_number(value) or value < 0 or (strict and value == 0):
            _fail(
                f"optimizer.{key}", value, "must be a positive number" if strict else "must be a number >= 0"
            )
    for key in ("fused", "nesterov"):
        value = optimizer.get(key)
        if value is not None and not isinstance(value, bool):
            _fail(f"optimizer.{key}", value, "must be true, false or null")
    if optimizer.get("nesterov") and not optimizer.get("momentum"):
        _fail("optimizer.nesterov", True, "needs optimizer.momentum > 0")


def _validate_logger(logger: DictConfig) -> None:
    uri = logger.tracking_uri
    if uri is not None and not isinstance(uri, str):
        _fail("logger.tracking_uri", uri, "must be a URI string or null")
    if isinstance(uri, str) and re.search(r"://[^/@\s]+@", uri):
        raise ConfigError(
            "logger.tracking_uri holds credentials (user:secret@...): the config is written to every run "
            "folder; set MLFLOW_TRACKING_URI in the environment instead (or MLFLOW_TRACKING_USERNAME/PASSWORD)"
        )
    if not isinstance(logger.experiment_name, str) or not logger.experiment_name.strip():
        _fail("logger.experiment_name", logger.experiment_name, "must be a non-empty string")
    if not isinstance(logger.offline, bool):
        _fail("logger.offline", logger.offline, "must be true or false")


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU asked for by name must exist (imports torch: call after the numerics environment is set)."""
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail("trainer.accelerator", cfg.trainer.accelerator,
                  "torch sees no CUDA device here; use auto or cpu")  # fmt: skip


def validate_numerics(cfg: DictConfig) -> None:
    """The profile's values, and a thread count that agrees with it: a profile that fixes the count makes it
    part of the run identity (``numerics`` is hashed, ``trainer.num_threads`` is not)."""
    from initstudy.numerics import from_config

    profile = from_config(cfg.numerics)
    threads = cfg.trainer.num_threads
    if profile.num_threads is not None and threads is not None and threads != profile.num_threads:
        raise ConfigError(
            f"trainer.num_threads={threads} contradicts numerics={profile.name} (num_threads "
            f"{profile.num_threads}): set numerics.num_threads={threads} instead (a different run identity), "
            "or use numerics=fast"
        )


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (not where it is logged or how data is fetched)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for ignored in ("hydra", "logger", "download"):
        container.pop(ignored, None)
    # Speed knobs that do not change the maths. A thread count that does (numerics=portable fixes one) lives
    # in `numerics`, which is hashed.
    for ignored in ("num_threads", "steps_per_chunk"):
        container.get("trainer", {}).pop(ignored, None)
    text = yaml.safe_dump(container, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
