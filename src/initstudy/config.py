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

    if not _is_int(cfg.seed) or cfg.seed < 0:
        _fail("seed", cfg.seed, "must be a non-negative integer")
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

    lr = cfg.optimizer.get("lr")
    if not _is_number(lr) or not lr > 0:
        _fail("optimizer.lr", lr, "must be a positive number")
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
