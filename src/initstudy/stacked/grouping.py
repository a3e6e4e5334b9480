"""Which jobs of a sweep train together: those whose configs differ in nothing but ``init`` and ``seed``.

Everything else must be equal for members to share one stacked model and one Trainer: the architecture (layer
sizes, activation), the optimizer's type and every hyperparameter (members share one optimizer's settings),
batch size and data sizes (one batch shape per step), epochs, numerics, the evaluation interval, the device.
The key is simply the job's resolved config without ``init`` and ``seed``, so that a setting added to the
config later splits groups by default instead of being silently shared.

Some settings cannot be stacked at all (:func:`unsupported`); their jobs, groups of one and jobs already
complete run the one-job way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from initstudy.config import ConfigError

PER_MEMBER_KEYS = ("init", "seed")
# The classes the stacked path re-implements for M members; any other target runs the one-job way.
STACKABLE_TARGETS = {
    "model": ("initstudy.model.MLP",),
    "module": ("initstudy.module.InitStudyModule",),
    "data": ("initstudy.data.datamodule.MNISTDataModule",),
    # Elementwise update rules: one optimizer over per-member tensors is each member's own optimizer.
    "optimizer": ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"),
}
FULL_PRECISION = ("32", "32-true")


def check_max_models(max_models: object) -> int:
    if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
        raise ConfigError(
            f"invalid hydra.launcher.max_models={max_models!r}: must be a positive integer (members per stacked group)"
        )
    return max_models


def unsupported(cfg: DictConfig) -> str | None:
    """Why the job ``cfg`` (without its ``hydra`` node) cannot be a stacked member, or None."""
    for section, targets in STACKABLE_TARGETS.items():
        target = cfg[section].get("_target_")
        if target not in targets:
            return f"{section}._target_={target}"
    if str(cfg.trainer.precision) not in FULL_PRECISION:
        return f"trainer.precision={cfg.trainer.precision}"
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


def plan(candidates: Sequence[Candidate], max_models: int) -> list[list[int]]:
    """The sweep as units of work, in job order (a unit starts where its first job stood): groups of 2 to
    ``max_models`` incomplete, stackable jobs with equal keys, and single jobs (complete ones, unstackable
    ones, and what is left of a key after the groups are cut)."""
    check_max_models(max_models)
    by_key: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for candidate in candidates:
        if candidate.complete or unsupported(candidate.cfg) is not None:
            units.append([candidate.index])
        else:
            by_key.setdefault(group_key(candidate.cfg), []).append(candidate.index)
    for indices in by_key.values():
        units.extend(indices[start : start + max_models] for start in range(0, len(indices), max_models))
    return sorted(units, key=lambda unit: unit[0])
