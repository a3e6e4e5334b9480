"""Composing and validating the study configuration before any expensive or persistent work.

``params.yaml`` at the repository root is Hydra's primary config; ``conf/`` holds the groups. Every entry
point runs from the repository root (DVC does so for its stages). :func:`validate` turns every bad value
into a one-line :class:`ConfigError` that names the key, the value and what is allowed.

This module does not import torch (nor anything that does): entry points compose the config and apply its
numerics profile before torch starts (see ``initstudy.config.numerics``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from initstudy.config import schema
from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root
from initstudy.nn.gains import critical_gain

PRIMARY_CONFIG = "params"
CONFIG_GROUPS_DIR = "conf"
schema.register()  # before any composition: params.yaml's defaults list starts with the schema
# init=orthogonal_critical's gain: ${initstudy.critical_gain:${model.activation}} (conf/init/).
CRITICAL_GAIN_RESOLVER = "initstudy.critical_gain"
OmegaConf.register_new_resolver(CRITICAL_GAIN_RESOLVER, critical_gain, replace=True)


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


def is_smoke_test(cfg: DictConfig) -> bool:
    """``trainer.fast_dev_run`` (debug=fast_dev_run): a few batches of each loop, not a run; it keeps nothing
    (no run folder, no MLflow run, no manifest row)."""
    return bool(cfg.trainer.get("fast_dev_run"))


def counts_chunks(trainer: dict[str, Any]) -> bool:
    """Whether the Trainer settings limit training by Lightning batches (chunks of optimizer steps)."""
    return bool(trainer.get("fast_dev_run")) or trainer.get("limit_train_batches") is not None


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (not where it is logged or how data is fetched)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for ignored in ("hydra", "logger", "download"):
        container.pop(ignored, None)
    # A speed knob that does not change the maths (the thread count does: it lives in `numerics`, hashed),
    # unless the Trainer counts batches: a Lightning batch is a chunk of steps_per_chunk optimizer steps, so
    # limit_train_batches=2 (or fast_dev_run) trains a number of steps that depends on it.
    if not counts_chunks(container.get("trainer", {})):
        container.get("data", {}).pop("steps_per_chunk", None)
    text = yaml.safe_dump(container, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
