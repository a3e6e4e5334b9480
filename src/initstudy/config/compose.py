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
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

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


def omegaconf_error(error: BaseException) -> OmegaConfBaseException | None:
    """The OmegaConf error behind a Hydra one, with the key it names (``full_key``) and the value it refused
    (``value``): Hydra chains it as the cause of an override's error and as the context of a group option's."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        if isinstance(link, OmegaConfBaseException) and link.full_key is not None:
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def config_file(error: BaseException) -> str | None:
    """Where Hydra met the error while merging a config file, as the user finds it (``conf/trainer/default.yaml``,
    ``params.yaml``); None for an override's error. Hydra's message is the only place that names the file (no
    attribute of its ConfigCompositionException does): ``In 'trainer/default': ...``."""
    named = re.match(r"In '([\w/]+)': ", str(error))
    if named is None:
        return None
    path = named.group(1)
    return f"{PRIMARY_CONFIG}.yaml" if path == PRIMARY_CONFIG else f"{CONFIG_GROUPS_DIR}/{path}.yaml"


def type_error(error: BaseException) -> str | None:
    """A value the schema's type refuses (``seed=abc`` on the command line, or a group option's YAML), as one
    line naming key, value and what is allowed; None for other errors. Key and value are the attributes of
    OmegaConf's ValidationError, not its wording."""
    cause = omegaconf_error(error)
    if not isinstance(cause, ValidationError):
        return None
    name = str(cause.full_key).split("[", 1)[0]  # a list's item names the list: model.hidden_sizes[1]
    value = OmegaConf.to_container(cause.value) if OmegaConf.is_config(cause.value) else cause.value
    where = config_file(error)
    return f"invalid {name}={value!r}{f' (in {where})' if where else ''}: {schema.allowed_for(name)}"


def unknown_key(error: BaseException) -> str | None:
    """A key the schema does not have (a typo in an override or in a group option's YAML) as one line naming
    it and, for a file, the keys allowed there; None for other errors."""
    cause = omegaconf_error(error)
    if not isinstance(cause, ConfigKeyError | ConfigAttributeError):
        return None
    key = str(cause.full_key)
    where = config_file(error)
    if where is None:
        return f"unknown config key {key!r} (prefix with + only to add a new key on purpose)"
    section = key.split(".")[0] if "." in key else None
    if section is None:
        allowed = f"allowed at the top level: {', '.join(sorted(schema.top_level_keys()))}"
    elif section in schema.SECTION_SCHEMAS:
        allowed = f"allowed in {section}: {', '.join(sorted(schema.section_keys(section)))}"
    else:
        return f"unknown config key {key!r} (in {where})"
    return f"unknown config key {key!r} (in {where}); {allowed}"


def one_line(error: Exception, root: Path | None = None) -> str:
    """Hydra's composition errors as one line, listing the allowed options where Hydra lists them."""
    explained = type_error(error) or unknown_key(error)
    if explained:
        return explained
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" in error.missing_cfg_file:
        group, option = error.missing_cfg_file.rsplit("/", 1)
        return (
            f"unknown {group.replace('/', '.')} {option!r}; allowed: {', '.join(group_options(group, root))}"
        )
    text = str(error).strip()
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
