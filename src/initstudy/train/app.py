"""``python -m initstudy.train``: one run, or ``--multirun`` a sweep (Hydra), each logged to MLflow.

Hydra parses the command line, composes the config and runs the sweeper and launcher it is given; the
pre-flight (numerics environment, every job validated, destinations, store, lock, manifest, MLflow parent
run) is a Hydra callback registered in ``conf/hydra/study.yaml`` (:mod:`initstudy.sweep.preflight`). This module is
the job, and a thin :func:`main` that answers ``--help`` from the configs alone and turns a refusal into one
line on stderr and exit status 2.

    python -m initstudy.train                                   # one run: params.yaml as it is
    python -m initstudy.train init=he_uniform seed=3            # one run, overridden
    python -m initstudy.train --multirun                        # the default sweep (params.yaml)
    python -m initstudy.train -m init=zeros,he_uniform seed=0,1 hydra.sweep.dir=runs_try
    python -m initstudy.train -m hydra/launcher=stacked         # jobs equal but for init, seed: one model
    python -m initstudy.train -m optimizer.lr=0.001,0.003       # runs/optimizer.lr=0.001/<init>/seed_<n>
    python -m initstudy.train -m hydra/sweeper=tune init=he_uniform seed=0 'optimizer.lr=tag(log,interval(1e-4,1e-1))'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from initstudy.config import numerics
from initstudy.core import collector, signals
from initstudy.runs.rundir import run_identity
from initstudy.sweep import jobs, preflight
from initstudy.train.spec import JobSpec

LOG_LEVEL_ENV = "INITSTUDY_LOG_LEVEL"


def apply_log_level() -> None:
    """$INITSTUDY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) for the study's own loggers; INFO by default.
    Hydra's own: hydra.job_logging.root.level=WARNING, or hydra/job_logging=disabled."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("initstudy").setLevel(getattr(logging, level, logging.INFO))


def job_spec(cfg: DictConfig) -> JobSpec:
    """Inside Hydra's job (``run_job``): the pre-flight's verdict on this job, its log level and numerics, and
    where it trains (the run folder's staging folder, where Hydra also wrote its files)."""
    hydra_cfg = HydraConfig.get()
    final = Path(hydra_cfg.runtime.output_dir)
    preflight.admit(final)  # the pre-flight's verdict on this job
    job_index = hydra_cfg.job.num if hydra_cfg.job.get("num") is not None else 0
    apply_log_level()
    # A job process that did not inherit the profile's environment (SLURM with --export=NONE) gets it here,
    # before its first torch import; one that did (basic launcher, loky, submitit) is checked.
    numerics.apply_before_torch(numerics.from_config(cfg.numerics))
    # Hydra's job number, as Hydra logs it.
    position = f"#{job_index} " if hydra_cfg.mode == RunMode.MULTIRUN else ""
    return JobSpec(cfg, final, jobs.staging_for(hydra_cfg), run_identity(cfg), job_index, position)


def objective(metrics: dict[str, Any]) -> float | None:
    """What a tuning sweeper maximises: the held-out validation accuracy (the pre-flight refuses to tune
    without a validation split: tuning on the test set would leak it into the choice)."""
    return metrics.get("val/acc", metrics.get("test/acc"))


def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job: train in the run folder's staging folder, promoted into Hydra's output folder once
    complete. Returns :func:`objective`. (``hydra/launcher=stacked`` runs :func:`job_spec` per job and trains
    the jobs it can group together: initstudy.stacked.) A job process (loky, SLURM) imports torch and Lightning
    here, so the collector pauses first (initstudy.core.collector)."""
    # In a job process of its own (SLURM, loky) a stop signal ends the job with 128 + its number, its run
    # KILLED; inside the launching process (basic launcher) the entry point's handling is already in place.
    with signals.stopping_exits("initstudy.train job"), collector.start_up():
        from initstudy.train.group import train_run

        spec = job_spec(cfg)
        return objective(
            train_run(cfg, spec.final, spec.staging, spec.identity, spec.job_index, spec.position)
        )
