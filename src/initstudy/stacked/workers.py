"""Units of a stacked sweep in worker processes, as Hydra's joblib launcher runs jobs: ``joblib.Parallel`` on
its loky backend, each worker given Hydra's global state (``Singleton``) and the launcher's context.

Why processes: under ``numerics=portable`` every job runs on one thread, so one process trains one unit on
one core; on N cores N units train at once. A worker runs a unit exactly as the launching process would
(the launcher hands it :func:`initstudy.stacked.launcher.run_unit`), so where a unit runs changes none of its bytes. loky reuses its
workers and starts them with ``OMP_NUM_THREADS`` = CPUs / workers (what ``numerics=fast`` then uses); they
inherit the launching process's environment: the numerics profile's variables and the MLflow parent run.

A worker does not outlive the launching process: loky notices a dead parent only between tasks, so a launcher
killed (SIGTERM, SIGKILL, a lost terminal) would leave its workers training on, unlocked, into folders that the
next attempt's pre-flight recovers. Each worker watches its parent and exits within a second of its death; the
folders it leaves are an interrupted attempt's, which resume handles (docs/reliability.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class UnitRunner(Protocol):
    """How one unit runs (the launcher's ``run_unit``), passed in so that this module need not import the
    launcher that imports it; loky sends it to the workers by its qualified name."""

    def __call__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        configs: dict[int, DictConfig],
        threads: int,
    ) -> dict[int, JobReturn]: ...


def run_units(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    units: Sequence[dict[int, DictConfig]],
    workers: int,
    threads: int,
    run_unit: UnitRunner,
) -> dict[int, JobReturn]:
    """Every unit (job index -> config) in up to ``workers`` processes, the most work first
    (:func:`initstudy.stacked.grouping.unit_work`: they finish last otherwise), each run by ``run_unit``; each
    job's JobReturn by its index."""
    from joblib import Parallel, delayed

    from initstudy.stacked.grouping import unit_work

    state = Singleton.get_state()
    order = sorted(units, key=lambda unit: unit_work(list(unit.values())), reverse=True)
    done = Parallel(n_jobs=workers, backend="loky")(
        delayed(in_worker)(run_unit, hydra_context, task_function, unit, state, threads) for unit in order
    )
    return {i: ret for returns in done for i, ret in returns.items()}


def in_worker(
    run_unit: UnitRunner,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    unit: dict[int, DictConfig],
    singleton_state: dict[Any, Any],
    threads: int = 1,
) -> dict[int, JobReturn]:
    """One unit, in a worker: Hydra's globals first (resolvers, ConfigStore, HydraConfig), as joblib's
    ``execute_job`` sets them. The collector pauses before the unit imports torch and Lightning
    (initstudy.core.collector)."""
    from initstudy.core import collector, signals

    with signals.stopping_exits("initstudy.train worker"), collector.start_up():
        exit_with_parent()
        setup_globals()
        Singleton.set_state(singleton_state)
        return run_unit(hydra_context, task_function, unit, threads)


_watching = threading.Event()


def exit_with_parent(interval_s: float = 1.0) -> None:
    """Once per worker process: a daemon thread that ends the process when its parent is gone (reparented)."""
    if _watching.is_set():
        return
    _watching.set()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(70)  # EX_SOFTWARE: no cleanup; the run folders are an interrupted attempt's

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
