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
from omegaconf.errors import InterpolationResolutionError, ValidationError

from initstudy import schema
from initstudy.gains import critical_gain

PRIMARY_CONFIG = "params"
CONFIG_GROUPS_DIR = "conf"
schema.register()  # before any composition: params.yaml's defaults list starts with the schema
# init=orthogonal_critical's gain: ${initstudy.critical_gain:${model.activation}} (conf/init/).
CRITICAL_GAIN_RESOLVER = "initstudy.critical_gain"
OmegaConf.register_new_resolver(CRITICAL_GAIN_RESOLVER, critical_gain, replace=True)


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


def type_error(error: BaseException) -> str | None:
    """A value the schema's type refuses (``seed=abc`` on the command line, or a group option's YAML), as one
    line naming key, value and what is allowed; None for other errors."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__
    text = str(cause if cause is not None else error)
    key = re.search(r"full_key: (\S+)", text)
    if key is None or (cause is None and "ValidationError" not in str(error)):
        return None
    name = re.sub(r"\[\d+\]$", "", key.group(1))
    found = re.search(r"Value '([^']*)'", text)
    value: Any = yaml.safe_load(found.group(1)) if found else None
    option = re.search(r"^In '([\w/]+)'", str(error))
    where = f" (in {CONFIG_GROUPS_DIR}/{option.group(1)}.yaml)" if option else ""
    return f"invalid {name}={value!r}{where}: {schema.allowed_for(name)}"


def one_line(error: Exception, root: Path | None = None) -> str:
    """Hydra's composition errors as one line, listing the allowed options where Hydra lists them."""
    typed = type_error(error)
    if typed:
        return typed
    text = str(error).strip()
    not_in_schema = re.search(r"^In '([\w/]+)'.*Key '[^']+' not in '\w+'\s+full_key: (\S+)", text, re.DOTALL)
    if not_in_schema:
        option, key = not_in_schema.groups()
        section = key.split(".")[0]
        allowed = (
            schema.section_keys(section) if section in schema.SECTION_SCHEMAS else schema.top_level_keys()
        )
        return (f"unknown config key {key!r} (in {CONFIG_GROUPS_DIR}/{option}.yaml); allowed in {section}: "
                f"{', '.join(sorted(allowed))}")  # fmt: skip
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


def _fail(key: str, value: Any, allowed: str) -> None:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    raise ConfigError(f"invalid {key}={value!r}: {allowed}")


def _check_keys(section: str, node: Any, allowed: Sequence[str]) -> None:
    """Keys the schema does not name (only ``+key=...`` can add one: Hydra's struct mode refuses the rest)."""
    if not isinstance(node, DictConfig):
        _fail(section, node, "must be a mapping")
    prefix = f"{section}." if section else ""
    for key in node:
        if key not in allowed:
            where = f"in {section}" if section else "top-level keys"
            raise ConfigError(
                f"unknown config key '{prefix}{key}'; allowed {where}: {', '.join(sorted(allowed))}"
            )


def _constructor_keys(node: DictConfig, section: str) -> list[str]:
    """The schema of a group whose options differ in fields: the signature of the option's ``_target_``."""
    target = node.get("_target_")
    if not isinstance(target, str):
        raise ConfigError(f"{section} has no _target_; pick an option: {', '.join(group_options(section))}")
    try:
        parameters = inspect.signature(get_class(target)).parameters
    except Exception as error:
        raise ConfigError(f"{section}._target_ {target!r} cannot be imported: {error}") from None
    return [*parameters, "_target_", "_partial_"]


def validate(cfg: DictConfig) -> None:
    """Check what the schema's types cannot: unknown keys added with ``+``, ranges, choices and the relations
    between values. Raise :class:`ConfigError` naming the first bad one."""
    from initstudy.model import ACTIVATIONS  # imports torch: not at module level (see the docstring)
    from initstudy.numerics import from_config

    _check_keys("", cfg, [*schema.top_level_keys(), "hydra"])
    for section in schema.SECTION_SCHEMAS:
        _check_keys(section, cfg[section], schema.section_keys(section))
    for section in ("init", "optimizer", "numerics"):
        _check_keys(section, cfg[section], _constructor_keys(cfg[section], section))
    for key, allowed, check in schema.field_checks():
        value = OmegaConf.select(cfg, key)
        if not check(value):
            _fail(key, value, allowed)
    if cfg.init.get("name") not in group_options("init"):
        _fail("init.name", cfg.init.get("name"), f"must be one of {', '.join(group_options('init'))}")
    _validate_layers(cfg.model)
    if cfg.model.activation not in ACTIVATIONS:
        _fail("model.activation", cfg.model.activation, f"must be one of {', '.join(ACTIVATIONS)}")
    for key, (allowed, check) in schema.OPTIMIZER_CHECKS.items():
        if key in cfg.optimizer and not check(cfg.optimizer[key]):
            _fail(f"optimizer.{key}", cfg.optimizer[key], allowed)
    if cfg.optimizer.get("nesterov") and not cfg.optimizer.get("momentum"):
        _fail("optimizer.nesterov", True, "needs optimizer.momentum > 0")
    _validate_logger(cfg.logger)
    from_config(cfg.numerics)
    deterministic = cfg.numerics.get("deterministic")
    if deterministic not in schema.DETERMINISTIC or not isinstance(deterministic, bool | str):
        _fail("numerics.deterministic", deterministic, "allowed: true, false, warn")
    try:
        init_kwargs = {k: v for k, v in cfg.init.items() if k != "_target_"}
        get_class(cfg.init._target_)(**init_kwargs)
    except InterpolationResolutionError as error:  # a resolver's own error (initstudy.gains): its first line
        cause = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(error).splitlines()[0])
        raise ConfigError(f"invalid init for {cfg.init.name!r}: {cause}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid init for {cfg.init.name!r}: {error}") from None


def _validate_layers(model: DictConfig) -> None:
    """``hidden_sizes``, or ``depth`` x ``width`` when it is null; never both."""
    hidden, depth, width = model.hidden_sizes, model.depth, model.width
    if hidden is None and (depth is not None or width is not None):
        for key, value in (("model.depth", depth), ("model.width", width)):
            if not schema.positive_int(value):
                _fail(key, value, schema.allowed_for(key))
        return
    if depth is not None or width is not None:
        raise ConfigError(
            f"model.hidden_sizes={OmegaConf.to_container(hidden)} and model.depth={depth}/model.width={width} "
            "both given; set model.hidden_sizes=null to use depth and width"
        )
    if hidden is None or len(hidden) == 0:
        _fail("model.hidden_sizes", hidden, schema.allowed_for("model.hidden_sizes"))
    if not all(schema.positive_int(size) for size in hidden):
        _fail("model.hidden_sizes", hidden, "every size must be a positive integer")


def _validate_logger(logger: DictConfig) -> None:
    uri = logger.tracking_uri
    if isinstance(uri, str) and re.search(r"://[^/@\s]+@", uri):
        raise ConfigError(
            "logger.tracking_uri holds credentials (user:secret@...): the config is written to every run "
            "folder; set MLFLOW_TRACKING_URI in the environment instead (or MLFLOW_TRACKING_USERNAME/PASSWORD)"
        )


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU asked for by name must exist (imports torch: call after the numerics environment is set)."""
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail("trainer.accelerator", cfg.trainer.accelerator,
                  "torch sees no CUDA device here; use auto or cpu")  # fmt: skip


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (not where it is logged or how data is fetched)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for ignored in ("hydra", "logger", "download"):
        container.pop(ignored, None)
    # A speed knob that does not change the maths (the thread count does: it lives in `numerics`, hashed).
    container.get("data", {}).pop("steps_per_chunk", None)
    text = yaml.safe_dump(container, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
