"""``python -m initstudy.train``: one run, or ``--multirun`` a sweep (Hydra), each logged to MLflow.

Hydra parses the command line, composes the config and runs the sweeper and launcher it is given; the
pre-flight (numerics environment, every job validated, destinations, store, lock, manifest, MLflow parent
run) is a Hydra callback registered in ``conf/hydra/study.yaml`` (:mod:`initstudy.launch`). This module is
the job, and a thin :func:`main` that answers ``--help`` from the configs alone and turns a refusal into one
line on stderr and exit status 2.

    python -m initstudy.train                                   # one run: params.yaml as it is
    python -m initstudy.train init=he_uniform seed=3            # one run, overridden
    python -m initstudy.train --multirun                        # the default sweep (params.yaml)
    python -m initstudy.train -m init=zeros,he_uniform seed=0,1 hydra/launcher=joblib
    python -m initstudy.train -m hydra/launcher=stacked         # jobs equal but for init, seed: one model
    python -m initstudy.train -m optimizer.lr=0.001,0.003       # runs/optimizer.lr=0.001/<init>/seed_<n>
    python -m initstudy.train -m hydra/sweeper=tune init=he_uniform seed=0 'optimizer.lr=tag(log,interval(1e-4,1e-1))'
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from initstudy import collector, launch, numerics, sweep
from initstudy.config import CONFIG_GROUPS_DIR, ConfigError, compose_config, repo_root
from initstudy.rundir import run_identity

LOG_LEVEL_ENV = "INITSTUDY_LOG_LEVEL"
# Hydra's flags that answer without running anything.
ANSWER_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}


def apply_log_level() -> None:
    """$INITSTUDY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) for the study's own loggers; INFO by default.
    Hydra's own: hydra.job_logging.root.level=WARNING, or hydra/job_logging=disabled."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("initstudy").setLevel(getattr(logging, level, logging.INFO))


@dataclass(frozen=True)
class JobSpec:
    """One admitted job, ready to train: what ``runner.train_run`` (or a stacked group) needs."""

    cfg: DictConfig
    final: Path
    staging: Path
    identity: str
    job_index: int
    position: str


def job_spec(cfg: DictConfig) -> JobSpec:
    """Inside Hydra's job (``run_job``): the pre-flight's verdict on this job, its log level and numerics, and
    where it trains (the run folder's staging folder, where Hydra also wrote its files)."""
    hydra_cfg = HydraConfig.get()
    final = Path(hydra_cfg.runtime.output_dir)
    launch.admit(final)  # the pre-flight's verdict on this job
    job_index = hydra_cfg.job.num if hydra_cfg.job.get("num") is not None else 0
    apply_log_level()
    # A job process that did not inherit the profile's environment (SLURM with --export=NONE) gets it here,
    # before its first torch import; one that did (basic launcher, loky, submitit) is checked.
    numerics.apply_before_torch(numerics.from_config(cfg.numerics))
    size = os.environ.get(launch.SWEEP_SIZE_ENV)
    position = f"run {job_index + 1}/{size} " if size else ""
    return JobSpec(cfg, final, sweep.staging_for(hydra_cfg), run_identity(cfg), job_index, position)


def objective(metrics: dict[str, Any]) -> float | None:
    """What a tuning sweeper maximises: the held-out validation accuracy (the pre-flight refuses to tune
    without a validation split: tuning on the test set would leak it into the choice)."""
    return metrics.get("val/acc", metrics.get("test/acc"))


@hydra.main(config_path=str(repo_root()), config_name="params", version_base="1.3")
def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job: train in the run folder's staging folder, promoted into Hydra's output folder once
    complete. Returns :func:`objective`. (``hydra/launcher=stacked`` runs :func:`job_spec` per job and trains
    the jobs it can group together: initstudy.stacked.) A job process (loky, SLURM) imports torch and Lightning
    here, so the collector pauses first (initstudy.collector)."""
    with collector.start_up():
        from initstudy.runner import train_run

        spec = job_spec(cfg)
        return objective(
            train_run(cfg, spec.final, spec.staging, spec.identity, spec.job_index, spec.position)
        )


def answers_without_running(argv: Sequence[str]) -> bool:
    return any(arg.split("=", 1)[0] in ANSWER_FLAGS for arg in argv)


def answer_without_running(argv: Sequence[str]) -> None:
    """``--help``, ``--hydra-help``, ``--cfg``, ``--info``, shell completion: Hydra answers them from a primary
    config folder that holds params.yaml alone. Hydra's help lists every config group by walking that folder;
    the repo root holds .venv/, runs/ and data/ (minutes to walk), the config groups live in conf/ (found
    through hydra.searchpath), so the walk covers the configs and nothing else."""
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="initstudy-help-") as folder:
        (Path(folder) / "params.yaml").symlink_to(root / "params.yaml")
        for group in sorted((root / CONFIG_GROUPS_DIR).iterdir()):  # listed as the app's groups
            (Path(folder) / group.name).symlink_to(group)
        sys.argv = [sys.argv[0], *argv]
        hydra.main(config_path=folder, config_name="params", version_base="1.3")(lambda cfg: None)()


@contextlib.contextmanager
def errors_raised() -> Iterator[None]:
    """Hydra prints an error it meets (several lines) and exits 1, unless HYDRA_FULL_ERROR is set: then it
    raises it, and :func:`main` can say it in one line."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def explain(error: HydraException, argv: Sequence[str]) -> str:
    """One line for an error Hydra met while composing: the project's own message for it where composing
    the same overrides gives one (unknown option, unknown key), else Hydra's text on one line."""
    overrides = [arg for arg in argv if not arg.startswith("-")]
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        plain, swept = sweep.split_overrides(overrides)
        if swept and not multirun:
            return f"{swept[0]!r} sweeps several values: add --multirun (-m)"
        compose_config(plain)
    except ConfigError as composed:
        return str(composed)
    return " ".join(str(error).split())[:400]


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if answers_without_running(argv):
        answer_without_running(argv)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.argv = [sys.argv[0], *argv]
    try:
        with collector.start_up(), errors_raised():
            hydra_job()
    except BaseException as error:
        launch.end_session(error)
        if isinstance(error, launch.PREFLIGHT_ERRORS):
            launch.refuse(str(error))
        if isinstance(error, HydraException):
            launch.refuse(explain(error, argv))
        raise


if __name__ == "__main__":
    main()
