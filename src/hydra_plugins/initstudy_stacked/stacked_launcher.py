"""``hydra/launcher=stacked`` (conf/hydra/launcher/stacked.yaml): a thin Launcher; the work is initstudy.stacked.

Hydra imports every module under ``hydra_plugins`` at start-up to find plugins, so this one imports nothing
heavy: torch and the study's training code load only when a sweep is launched.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from initstudy.sweep.launching import ChecksBatches


class StackedLauncher(Launcher, ChecksBatches):
    """Runs a sweep's jobs; jobs equal but for ``init`` and ``seed`` train as one stacked model, up to
    ``max_models`` at a time, up to ``n_jobs`` units at once in worker processes (1: in this process), each
    group on ``threads`` threads (-1: the CPUs shared out among the workers)."""

    def __init__(self, max_models: int = 32, n_jobs: int = 1, threads: int = -1) -> None:
        self.max_models, self.n_jobs, self.threads = max_models, n_jobs, threads
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.batches = 0  # launched so far: the first writes the sweep's manifest, later ones extend it

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from initstudy.stacked.grouping import check_max_models, check_n_jobs, check_threads
        from initstudy.sweep.launching import ComposeOnce

        check_max_models(self.max_models)  # a ConfigError: one line, before the pre-flight takes the lock
        check_n_jobs(self.n_jobs)
        check_threads(self.threads)
        # The sweeper holds the same context: its check of a batch and this launcher compose each job once.
        if not isinstance(hydra_context.config_loader, ComposeOnce):
            hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from initstudy.stacked.launcher import launch

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        self.batches += 1
        return launch(self.hydra_context, self.task_function, self.config, job_overrides, initial_job_idx,
                      self.max_models, self.n_jobs, self.threads, first=self.batches == 1)  # fmt: skip
