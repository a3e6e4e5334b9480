"""One admitted job as the training code receives it (from the Hydra job, initstudy.train.app, or a stacked
group's launcher): a module of its own, so that the job and the training code both name it without importing
each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig


@dataclass(frozen=True)
class JobSpec:
    """One admitted job, ready to train: what ``fit.train_group`` needs."""

    cfg: DictConfig
    final: Path
    staging: Path
    identity: str
    job_index: int
    position: str
