"""The one owner of config validation: what Hydra's structured schema cannot express (ranges, choices,
relations between keys, keys added with ``+``), checked on a composed config before any job starts, so a
bad value fails in one line that names it and what is allowed."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from initstudy.config import schema
from initstudy.config.compose import group_options
from initstudy.core.errors import ConfigError


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
    from initstudy.config.numerics import from_config
    from initstudy.nn.model import ACTIVATIONS  # imports torch: not at module level (see the docstring)

    _check_keys("", cfg, [*schema.top_level_keys(), *schema.OPTIONAL_SECTIONS, "hydra"])
    for section in schema.SECTION_SCHEMAS:
        if section != "trainer":
            _check_keys(section, cfg[section], schema.section_keys(section))
    _validate_trainer_keys(cfg.trainer)
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
    _validate_callbacks(cfg.get("callbacks"), cfg.data.val_size)
    from_config(cfg.numerics)
    deterministic = cfg.numerics.get("deterministic")
    if deterministic not in schema.DETERMINISTIC or not isinstance(deterministic, bool | str):
        _fail("numerics.deterministic", deterministic, "allowed: true, false, warn")
    try:
        init_kwargs = {k: v for k, v in cfg.init.items() if k != "_target_"}
        get_class(cfg.init._target_)(**init_kwargs)
    except InterpolationResolutionError as error:  # a resolver's own error (initstudy.gains): its first line
        raise ConfigError(f"invalid init for {cfg.init.name!r}: {_resolver_error(error)}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid init for {cfg.init.name!r}: {error}") from None


def _resolver_error(error: InterpolationResolutionError) -> str:
    """The first line of what the resolver itself raised, which OmegaConf chains behind its own errors; of
    OmegaConf's message where nothing is chained (an interpolation to a missing key)."""
    link: BaseException | None = error
    while isinstance(link, OmegaConfBaseException):
        link = link.__cause__ or link.__context__
    return str(link if link is not None else error).splitlines()[0]


def _validate_trainer_keys(trainer: DictConfig) -> None:
    """The schema's fields, and the optional keys (absent by default) with their ranges; a Lightning key this
    study cannot honour is refused with its reason."""
    required = schema.section_keys("trainer")
    for key in trainer:
        if key in required:
            continue
        if key in schema.OPTIONAL_TRAINER_KEYS:
            allowed, check = schema.OPTIONAL_TRAINER_KEYS[key]
            if not check(trainer[key]):
                _fail(f"trainer.{key}", trainer[key], allowed)
        elif key in schema.REFUSED_TRAINER_KEYS:
            _fail(f"trainer.{key}", trainer[key], f"not supported: {schema.REFUSED_TRAINER_KEYS[key]}")
        elif key in schema.RUNNER_TRAINER_KEYS:
            _fail(
                f"trainer.{key}", trainer[key], "set by the training code for every job, not a config value"
            )
        else:
            allowed_keys = sorted([*required, *schema.OPTIONAL_TRAINER_KEYS])
            raise ConfigError(
                f"unknown config key 'trainer.{key}'; allowed in trainer: {', '.join(allowed_keys)}"
            )


def _validate_callbacks(callbacks: Any, val_size: int) -> None:
    """``callbacks``: entries of conf/callbacks/, each a Lightning callback of :data:`schema.CALLBACK_TARGETS`
    whose keys its constructor takes, watching a validation metric (a callback that watches the test set
    would choose with it)."""
    if callbacks is None:
        return
    if not isinstance(callbacks, DictConfig):
        _fail(
            "callbacks",
            callbacks,
            f"choose with +callbacks=NAME; allowed: {', '.join(group_options('callbacks'))}",
        )
    for name, node in callbacks.items():
        key = f"callbacks.{name}"
        if not isinstance(node, DictConfig) or node.get("_target_") not in schema.CALLBACK_TARGETS:
            target = node.get("_target_") if isinstance(node, DictConfig) else node
            _fail(f"{key}._target_", target, f"allowed: {', '.join(schema.CALLBACK_TARGETS)}")
        keys = [k for k in _constructor_keys(node, key) if k not in schema.RUNNER_CALLBACK_KEYS]
        _check_keys(key, node, keys)
        monitor = node.get("monitor")
        if monitor is not None and monitor not in schema.MONITORED:
            _fail(f"{key}.monitor", monitor, f"allowed: {', '.join(schema.MONITORED)}")
        if monitor is not None and not val_size:
            _fail(f"{key}.monitor", monitor,
                  "needs a validation split (data.val_size > 0): with none, the test set would choose")  # fmt: skip


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
