"""The study's config schema: Hydra structured configs that every composed config is checked against.

``StudyConfig`` is registered in Hydra's ConfigStore as ``study_schema`` and is the first entry of params.yaml's
``defaults`` list, so every group option and every override merges into typed nodes: a value of the wrong
type, or a key the schema does not name, fails composition (see :func:`initstudy.config.compose.compose_config`,
which turns that into one line). The values themselves live in the YAML files only; a field here says what
a value must be, and, where a type cannot say it (a positive integer, a fraction in [0, 1), one of a few
names), the check and its one-line wording sit next to the field, written once.

``init``, ``optimizer`` and ``numerics`` differ in fields from option to option (an orthogonal initializer has
a gain, a variance-scaling one a mode): their schema is the constructor their ``_target_`` names, whose
signature and own checks :func:`initstudy.config.validate` applies. ``download`` is checked by
:mod:`initstudy.config.download`; ``hydra`` by Hydra.

This module does not import torch (the numerics profile must be applied first).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

SCHEMA_NAME = "study_schema"
# Lightning's seed range (seed_everything): a 32-bit unsigned integer.
MAX_SEED = 2**32 - 1
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
# What the chunked training loop honours (Lightning's precision plugin: autocast + manual_backward).
PRECISIONS = ("32", "32-true", "bf16-mixed")
DETERMINISTIC = (True, False, "warn")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return is_int(value) and value > 0


def positive_int_or_none(value: Any) -> bool:
    return value is None or positive_int(value)


def ascending_positive_ints(value: Any) -> bool:
    """A list (a plain one or OmegaConf's) of positive integers, each larger than the one before."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return False
    steps = list(value)
    return all(positive_int(v) for v in steps) and all(a < b for a, b in itertools.pairwise(steps))


def checked(allowed: str, check: Callable[[Any], bool] | None = None) -> Any:
    """A field whose value comes from the YAML (MISSING here), with the words that say what it may be and,
    where its type cannot express it, the check."""
    return field(default=MISSING, metadata={"allowed": allowed, "check": check})


@dataclass
class ModelConfig:
    """initstudy.nn.model.MLP: ``hidden_sizes``, or ``depth`` x ``width`` when ``hidden_sizes`` is null."""

    _target_: str = checked("the network's class")
    input_size: int = checked("must be a positive integer", positive_int)
    num_classes: int = checked("must be a positive integer", positive_int)
    hidden_sizes: list[int] | None = checked("must be a non-empty list of positive integers, e.g. [256,128]")  # noqa: RUF009 (a field(), as the others)
    activation: str = checked("must be one of the activations of initstudy.nn.model")
    depth: int | None = checked("must be a positive integer when model.hidden_sizes is null")
    width: int | None = checked("must be a positive integer when model.hidden_sizes is null")


@dataclass
class DataConfig:
    """initstudy.data.datamodule.MNISTDataModule: MNIST as tensors resident on the training device."""

    _target_: str = checked("the data module's class")
    root: str = checked("a folder (relative to the repo root) holding MNIST/raw/")
    batch_size: int = checked("must be a positive integer", positive_int)
    train_size: int | None = checked("must be a positive integer or null (all 60,000)", positive_int_or_none)
    val_size: int = checked(
        "must be an integer >= 0 (the last N training images held out for validation; 0: none, the test set "
        "is evaluated every epoch as in the seed notebook)",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    )
    eval_batch_size: int = checked("must be a positive integer", positive_int)
    steps_per_chunk: int = checked("must be a positive integer", positive_int)


@dataclass
class TrainerConfig:
    """pytorch_lightning.Trainer's keyword arguments that are study settings (the runner adds devices, logger,
    callbacks and the like). The node is open (:func:`register`): besides these fields it takes the keys of
    :data:`OPTIONAL_TRAINER_KEYS`, absent unless a config or the command line sets them, so that a config
    without them composes (and hashes) exactly as before they existed."""

    _target_: str = checked("Lightning's Trainer")
    max_epochs: int = checked("must be a positive integer", positive_int)
    accelerator: str = checked(f"must be one of {', '.join(ACCELERATORS)}", lambda v: v in ACCELERATORS)
    log_every_n_steps: int = checked("must be a positive integer", positive_int)
    precision: str = checked(
        f"allowed: {', '.join(PRECISIONS)} (16-mixed needs a GPU; this study trains in float32 by default)",
        lambda v: v in PRECISIONS,
    )


def batch_limit(value: Any) -> bool:
    """Lightning's ``limit_*_batches``: a count of batches (a positive integer) or a share of them in (0, 1]."""
    return (is_int(value) and value > 0) or (isinstance(value, float) and 0 < value <= 1)


# Trainer keys a config or the command line may add (absent by default: the default config's hash is as before
# they were allowed). Training uses manual optimization over chunks of ``data.steps_per_chunk`` optimizer steps
# (initstudy.train.module): a Lightning "batch" is a chunk. key -> (allowed, check).
OPTIONAL_TRAINER_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "fast_dev_run": (
        "must be true, false or a positive integer (batches of each loop; debug=fast_dev_run sets it)",
        lambda v: isinstance(v, bool) or positive_int(v),
    ),
    "limit_train_batches": (
        "must be a positive integer (chunks of data.steps_per_chunk optimizer steps per epoch) or a share in "
        "(0, 1]",
        batch_limit,
    ),
    "limit_test_batches": (
        "must be a positive integer (test batches of data.eval_batch_size images) or a share in (0, 1]",
        batch_limit,
    ),
    "gradient_clip_val": (
        "must be a positive number or null (each network's gradients clipped on their own)",
        lambda v: v is None or (is_number(v) and v > 0),
    ),
    "gradient_clip_algorithm": ("must be norm or value", lambda v: v in ("norm", "value")),
}
# Trainer keys Lightning users reach for that this study cannot honour, each with the reason and the way.
REFUSED_TRAINER_KEYS = {
    "accumulate_grad_batches": "Lightning refuses it under manual optimization, and a Lightning batch here is a "
    "chunk of data.steps_per_chunk optimizer steps; use a larger data.batch_size",
    "limit_val_batches": "every validation pass (module.val_steps, module.val_every_n_steps, each epoch end) "
    "reads the whole split; set data.val_size",
    "check_val_every_n_epoch": "the history holds one validation pass per epoch end; use module.val_every_n_steps",
    "val_check_interval": "use module.val_every_n_steps (optimizer steps) or module.val_steps",
    "max_steps": "training runs whole epochs (trainer.max_epochs); use data.train_size for fewer steps",
}
# Set by the runner for every job (initstudy.train.runner.build_trainer): not config values.
RUNNER_TRAINER_KEYS = ("devices", "deterministic", "logger", "callbacks", "enable_checkpointing",
                       "enable_progress_bar", "enable_model_summary", "num_sanity_val_steps",
                       "default_root_dir")  # fmt: skip


# conf/callbacks/ (``+callbacks=checkpoint``): the Lightning callbacks a run may add, by class; each option names
# its entry (``callbacks.<name>``), so that several combine (``+callbacks=[checkpoint,early_stopping]``).
CALLBACK_TARGETS = (
    "pytorch_lightning.callbacks.ModelCheckpoint",
    "pytorch_lightning.callbacks.EarlyStopping",
)
# What a callback may watch: the validation split's metrics, which the module logs at every epoch end.
MONITORED = ("val/loss", "val/acc")
# Set by the runner: a checkpoint is written into the run folder (initstudy.runs.rundir.CHECKPOINTS).
RUNNER_CALLBACK_KEYS = ("dirpath",)


@dataclass
class ModuleConfig:
    """initstudy.train.module.InitStudyModule's settings (the runner adds the model, optimizer and step count)."""

    _target_: str = checked("the LightningModule's class")
    stop_on_divergence: bool = checked("must be true or false")
    val_every_n_steps: int | None = checked(
        "must be a positive integer (optimizer steps between validation passes) or null (once per epoch only)",
        positive_int_or_none,
    )
    val_steps: list[int] = checked(  # noqa: RUF009 (a field(), as the others)
        "must be a list of strictly ascending positive integers (optimizer steps with an extra validation pass, "
        "e.g. [1,2,5,10,20,50]) or []",
        ascending_positive_ints,
    )
    layer_stats_every_n_steps: int | None = checked(
        "must be a positive integer (optimizer steps between per-layer probes, layer_stats.csv) or null (none)",
        positive_int_or_none,
    )


@dataclass
class LoggerConfig:
    tracking_uri: str | None = checked("must be a URI string or null")
    experiment_name: str = checked(
        "must be a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())
    )
    offline: bool = checked("must be true or false")
    log_model: bool = checked("must be true or false")


@dataclass
class StudyConfig:
    # ``callbacks`` (conf/callbacks/, ``+callbacks=...``) is no field: absent unless chosen, so that the default
    # config (and its hash) is as it was before the group existed; :func:`register` lets it in.
    seed: int = checked(f"must be an integer in [0, {MAX_SEED}] (Lightning's seed range)",
                        lambda v: is_int(v) and 0 <= v <= MAX_SEED)  # fmt: skip
    init: Any = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # a node of its own, opened by register()
    module: ModuleConfig = MISSING
    logger: LoggerConfig = MISSING
    numerics: Any = MISSING
    download: Any = MISSING


# Sections no field names, present only when their config group is chosen (``+callbacks=...``).
OPTIONAL_SECTIONS = ("callbacks",)

SECTION_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "trainer": TrainerConfig,
    "module": ModuleConfig,
    "logger": LoggerConfig,
}


def register() -> None:
    """Make ``study_schema`` known to Hydra (idempotent; every entry point composes after importing this).

    Two nodes are open to keys the dataclasses do not name, while composing: the root, so that a config group
    chosen with ``+`` (``+callbacks=checkpoint``) can add its section (Hydra closes the root again before the
    command line applies: a misspelt top-level key still needs ``+``), and ``trainer``, so that a config
    (``debug=tiny``) or the command line can set one of :data:`OPTIONAL_TRAINER_KEYS`. Every key either adds is
    then checked by :func:`initstudy.config.validate.validate`; the typed fields keep their types."""
    node = OmegaConf.structured(StudyConfig)
    OmegaConf.set_struct(node, False)
    OmegaConf.set_struct(node.trainer, False)
    ConfigStore.instance().store(name=SCHEMA_NAME, node=node)


def field_of(key: str) -> Any | None:
    """The schema field of a dotted key such as ``model.hidden_sizes[1]`` (None when the schema has none)."""
    parts = re.sub(r"\[\d+\]$", "", key).split(".")
    schema: type = StudyConfig
    for depth, name in enumerate(parts):
        match = next((f for f in fields(schema) if f.name == name), None)
        if match is None:
            return None
        if depth == len(parts) - 1:
            return match
        schema = SECTION_SCHEMAS.get(name)  # type: ignore[assignment]
        if schema is None:
            return None
    return None


def allowed_for(key: str) -> str:
    found = field_of(key)
    return found.metadata.get("allowed", "see conf/") if found is not None else "see conf/"


def top_level_keys() -> list[str]:
    return [f.name for f in fields(StudyConfig)]


def section_keys(section: str) -> list[str]:
    return [f.name for f in fields(SECTION_SCHEMAS[section])]


def field_checks() -> list[tuple[str, str, Callable[[Any], bool]]]:
    """(dotted key, allowed, check) for every field that has a range check."""
    out = []
    for f in fields(StudyConfig):
        if f.metadata.get("check"):
            out.append((f.name, f.metadata["allowed"], f.metadata["check"]))
    for section, schema in SECTION_SCHEMAS.items():
        for f in fields(schema):
            if f.metadata.get("check"):
                out.append((f"{section}.{f.name}", f.metadata["allowed"], f.metadata["check"]))
    return out


# ---- options whose schema is their constructor: the ranges a signature cannot say --------------------------
OPTIMIZER_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lr": ("must be a positive number", lambda v: is_number(v) and v > 0),
    "eps": ("must be a positive number", lambda v: v is None or (is_number(v) and v > 0)),
    "weight_decay": ("must be a number >= 0", lambda v: v is None or (is_number(v) and v >= 0)),
    "momentum": ("must be a number >= 0", lambda v: v is None or (is_number(v) and v >= 0)),
    "betas": (
        "must be two numbers in [0, 1)",
        lambda v: v is None or (len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v)),
    ),
    "fused": ("must be true, false or null", lambda v: v is None or isinstance(v, bool)),
    "nesterov": ("must be true, false or null", lambda v: v is None or isinstance(v, bool)),
}
