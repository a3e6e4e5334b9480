"""Train runs into their run folders, one or a group at once: resume, attempt, fit together, record, complete.

Per run: a complete run folder is skipped (``runner.resume``); every other run begins an attempt (staging
folder, numerics, MLflow child run: ``runner.begin``); the runs still to train are fitted together as one
stacked model (``fit.fit``; one run is a stack of one); then each run's results, marker, promotion and
FINISHED status (``runner.finish``). A failure while fitting fails every attempt; a failure while recording
fails only that run's. :func:`train_run` is one run: the basic, joblib and SLURM launchers' path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from initstudy.core import collector
from initstudy.train.fit import fit
from initstudy.train.runner import Attempt, Outcome, begin, collect_previous_run, finish, resume
from initstudy.train.spec import JobSpec


def train_group(specs: Sequence[JobSpec], threads: int = 1) -> list[dict[str, Any] | Exception]:
    """Train the jobs ``specs`` (one group) into their run folders, on up to ``threads`` threads; per job its
    metrics, or the error that ended its attempt. The cycle collector pauses until the group trains
    (initstudy.core.collector)."""
    started = time.perf_counter()
    collect_previous_run()
    with collector.start_up():
        return _train_group(specs, threads, started)


def _train_group(specs: Sequence[JobSpec], threads: int, started: float) -> list[dict[str, Any] | Exception]:
    results: dict[int, dict[str, Any] | Exception] = {}
    attempts: dict[int, Attempt] = {}
    try:
        for i, spec in enumerate(specs):
            done = resume(spec.cfg, spec.final, spec.staging, spec.identity)
            if done is not None:
                results[i] = done
            else:
                attempts[i] = begin(
                    spec.cfg, spec.final, spec.staging, spec.identity, spec.job_index, started
                )
        outcomes = fit_members([specs[i] for i in attempts], [attempts[i] for i in attempts], threads)
    except BaseException as error:
        for attempt in attempts.values():
            attempt.run.fail(error)
        raise
    for i, outcome in zip(attempts, outcomes, strict=True):
        try:
            results[i] = finish(attempts[i], outcome)
        except Exception as error:
            attempts[i].run.fail(error)
            results[i] = error
    return [results[i] for i in range(len(specs))]


def fit_members(specs: Sequence[JobSpec], attempts: Sequence[Attempt], threads: int = 1) -> list[Outcome]:
    if not specs:
        return []
    return fit([spec.cfg for spec in specs], specs[0].staging, [a.run.logger for a in attempts],
               specs[0].job_index, [spec.position for spec in specs], threads)  # fmt: skip


def train_run(cfg: DictConfig, final_dir: Path, staging: Path, identity: str, job_index: int = 0,
              position: str = "") -> dict[str, Any]:  # fmt: skip
    """Train ``cfg`` into ``final_dir`` (through ``staging``) unless it is already complete; its metrics. An
    error that ended the attempt is raised. The caller holds the collector's start-up (the Hydra job does:
    initstudy.train.app)."""
    started = time.perf_counter()
    collect_previous_run()
    result = _train_group([JobSpec(cfg, final_dir, staging, identity, job_index, position)], 1, started)[0]
    if isinstance(result, Exception):
        raise result
    return result
