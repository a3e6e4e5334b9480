"""A group's runs, each with the single run's bookkeeping: resume, attempt, fit together, record, complete.

Per member, exactly the steps of ``runner.train_run`` (the same functions): a complete run folder is skipped
(``runner.resume``); every other member begins an attempt (staging folder, numerics, MLflow child run:
``runner.begin``); the members still to train are fitted as one stacked model (one left: the single path,
``runner.fit``); then each member's results, marker, promotion and FINISHED status (``runner.finish``). A
failure while fitting fails every member's attempt; a failure while recording fails only that member.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from initstudy.core import collector
from initstudy.train.app import JobSpec
from initstudy.train.fit import fit_group
from initstudy.train.runner import Attempt, Outcome, begin, collect_previous_run, finish, fit, resume


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
    if len(specs) == 1:
        spec = specs[0]
        return [fit(spec.cfg, spec.staging, attempts[0].run.logger, spec.job_index, spec.position)]
    return fit_group([spec.cfg for spec in specs], specs[0].staging, [a.run.logger for a in attempts],
                     specs[0].job_index, [spec.position for spec in specs], threads)  # fmt: skip
