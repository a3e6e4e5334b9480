"""Which jobs of a sweep train together: those whose configs differ in nothing but ``init`` and ``seed``.

Everything else must be equal for members to share one stacked model and one Trainer: the architecture (layer
sizes, activation), the optimizer's type and every hyperparameter (members share one optimizer's settings),
batch size and data sizes (one batch shape per step), epochs, numerics, the evaluation interval, the device.
The key is simply the job's resolved config without ``init`` and ``seed``, so that a setting added to the
config later splits groups by default instead of being silently shared.

Some settings cannot share a stack (:func:`unsupported`); their jobs, groups of one and jobs already complete
run one by one, each as a stack of one (Hydra's ``run_job``, as the basic launcher runs them). Among them: a
job with Lightning callbacks (conf/callbacks: each member would need its own early-stopping point and
checkpoints of its own network) or one of the optional Trainer keys (conf/debug, ``trainer.fast_dev_run``,
``trainer.gradient_clip_val``, ...), so that nothing they change is ever shared between members.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from initstudy.config.schema import OPTIONAL_SECTIONS, OPTIONAL_TRAINER_KEYS
from initstudy.core.errors import ConfigError
from initstudy.train.network import balanced

PER_MEMBER_KEYS = ("init", "seed")
# The classes known to give each of M members its own run's bytes; any other target runs one job at a time.
STACKABLE_TARGETS = {
    "model": ("initstudy.nn.model.MLP",),
    "module": ("initstudy.train.module.InitStudyModule",),
    "data": ("initstudy.data.datamodule.MNISTDataModule",),
    # Elementwise update rules: one optimizer over per-member tensors is each member's own optimizer.
    "optimizer": (
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        "initstudy.nn.keras_adam.KerasAdam",
    ),
}
FULL_PRECISION = ("32", "32-true")


def check_max_models(max_models: object) -> int:
    if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
        raise ConfigError(
            f"invalid hydra.launcher.max_models={max_models!r}: must be a positive integer (members per stacked group)"
        )
    return max_models


def check_n_jobs(n_jobs: object) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(
            f"invalid hydra.launcher.n_jobs={n_jobs!r}: must be a non-zero integer (worker processes; -1: one per CPU)"
        )
    return n_jobs


def check_threads(threads: object) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or (threads < 1 and threads != -1):
        raise ConfigError(
            f"invalid hydra.launcher.threads={threads!r}: must be a positive integer or -1 (threads per stacked "
            "group; -1: the CPUs shared out among the worker processes)"
        )
    return threads


def threads_per_unit(threads: int, workers: int) -> int:
    """Threads each unit may train on: ``threads``, or with -1 this process's CPUs (as joblib counts them)
    shared out among ``workers`` units at once; at least one."""
    from joblib import cpu_count

    check_threads(threads)
    return threads if threads > 0 else max(1, cpu_count() // max(1, workers))


def worker_count(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` as joblib counts them: n > 0 is n, -1 every CPU this process may use,
    -2 all but one, ...; at least one."""
    from joblib import cpu_count

    check_n_jobs(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else cpu_count() + 1 + n_jobs)


def unsupported(cfg: DictConfig) -> str | None:
    """Why the job ``cfg`` (without its ``hydra`` node) cannot be a stacked member, or None."""
    for section, targets in STACKABLE_TARGETS.items():
        target = cfg[section].get("_target_")
        if target not in targets:
            return f"{section}._target_={target}"
    if str(cfg.trainer.precision) not in FULL_PRECISION:
        return f"trainer.precision={cfg.trainer.precision}"
    for section in OPTIONAL_SECTIONS:
        if cfg.get(section):
            return f"{section} ({', '.join(cfg[section])})"
    for key in OPTIONAL_TRAINER_KEYS:
        if key in cfg.trainer:
            return f"trainer.{key}={cfg.trainer[key]}"
    return None


def group_key(cfg: DictConfig) -> str:
    """The job's resolved config without its per-member keys, as canonical JSON."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    shared = {key: value for key, value in container.items() if key not in (*PER_MEMBER_KEYS, "hydra")}
    return json.dumps(shared, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """A job as the planner sees it: its index in the sweep, its config, whether its run folder is complete."""

    index: int
    cfg: DictConfig
    complete: bool


def plan(candidates: Sequence[Candidate], max_models: int, workers: int = 1) -> list[list[int]]:
    """The sweep as units of work, in job order (a unit starts where its first job stood): groups of
    incomplete, stackable jobs with equal keys, and single jobs (complete ones, unstackable ones, and groups
    that came out at one member).

    A key's jobs split into consecutive groups of sizes that differ by at most one: the fewest groups of at most
    ``max_models`` members, and more while fewer units of work than ``workers`` exist (a worker process per
    unit: 20 jobs on 2 workers are 2 groups of 10, not 1 of 20 and an idle worker). Which group a job joins
    changes none of its numbers (each member is its single run, bit for bit)."""
    check_max_models(max_models)
    by_key: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for candidate in candidates:
        if candidate.complete or unsupported(candidate.cfg) is not None:
            units.append([candidate.index])
        else:
            by_key.setdefault(group_key(candidate.cfg), []).append(candidate.index)
    working = sum(1 for c in candidates if not c.complete and unsupported(c.cfg) is not None)
    counts = split_counts([len(indices) for indices in by_key.values()], max_models, workers - working)
    for indices, count in zip(by_key.values(), counts, strict=True):
        units.extend(balanced(indices, count))
    return sorted(units, key=lambda unit: unit[0])


def split_counts(sizes: Sequence[int], max_models: int, workers: int) -> list[int]:
    """How many groups each key's ``sizes[k]`` jobs form: at least ``ceil(size / max_models)``; then, while
    the groups number fewer than ``workers``, the key with the largest group gets one group more."""
    counts = [-(-size // max_models) for size in sizes]
    while sum(counts) < workers:
        largest = max(range(len(sizes)), key=lambda k: (-(-sizes[k] // counts[k]), -k), default=None)
        if largest is None or counts[largest] >= sizes[largest]:
            break
        counts[largest] += 1
    return counts


def unit_work(configs: Sequence[DictConfig]) -> float:
    """A unit's training work, up to a constant: members x parameters x images seen (the matmuls dominate).
    Workers take the largest first (longest processing time first), so that a sweep whose deepest networks
    come last, like the depth experiment's, does not end on one core while the other idles."""
    from initstudy.nn.model import (
        resolve_hidden_sizes,  # imports torch: in the launcher, after the pre-flight
    )

    cfg = configs[0]
    model = cfg.model
    hidden = resolve_hidden_sizes(model.hidden_sizes, model.get("depth"), model.get("width"))
    sizes = [model.input_size, *hidden, model.num_classes]
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    images = (cfg.data.train_size or 60_000 - (cfg.data.val_size or 0)) * cfg.trainer.max_epochs
    return float(len(configs) * parameters * images)
