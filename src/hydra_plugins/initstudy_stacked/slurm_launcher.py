"""``hydra/launcher=slurm`` and ``slurm_gpu`` (conf/hydra/launcher/): the submitit plugin's SLURM launcher, with
the batch Hydra's sweeper hands it checked before anything is submitted (initstudy.sweep.preflight.check_batch).

Imports nothing heavy (Hydra imports every plugin module at start-up): submitit's plugin loads submitit only
when it launches, and the study's code loads here only then too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig

from initstudy.sweep.launching import ChecksBatches, ComposeOnce


class CheckedSlurmLauncher(SlurmLauncher, ChecksBatches):
    """submitit's ``SlurmLauncher``; each batch composed once by Hydra's loader and checked as a whole before
    its job array is submitted."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.batches = 0  # launched so far: the first writes the sweep's manifest, later ones extend it

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if not isinstance(hydra_context.config_loader, ComposeOnce):
            hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from initstudy.sweep import preflight

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        configs = [loader.load_sweep_config(self.config, list(overrides)) for overrides in job_overrides]
        self.batches += 1
        preflight.check_batch(self.config, configs, job_overrides, first=self.batches == 1)
        return super().launch(job_overrides, initial_job_idx)
