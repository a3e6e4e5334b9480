"""``hydra/launcher=slurm`` and ``slurm_gpu`` (conf/hydra/launcher/): the submitit plugin's SLURM launcher, with
the batch Hydra's sweeper hands it checked before anything is submitted (initstudy.sweep.preflight.check_batch).

Imports nothing heavy (Hydra imports every plugin module at start-up): submitit's plugin loads submitit only
when it launches, and the study's code loads here only then too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig

from initstudy.sweep.launching import ChecksBatches, ComposeOnce

log = logging.getLogger(__name__)
SUBMITTED = "_submitted.pkl"  # submitit's record of a submitted job: <job id>_submitted.pkl in its folder


class CheckedSlurmLauncher(SlurmLauncher, ChecksBatches):
    """submitit's ``SlurmLauncher``; each batch composed once by Hydra's loader and checked as a whole before
    its job array is submitted. A stop signal to the launching process (``kill``, Ctrl+C, a closed terminal)
    cancels the jobs it submitted (``scancel``, through submitit's job handle) before the sweep ends KILLED:
    stopping a sweep stops its runs under every launcher, and each job's own stop handling marks its run
    KILLED. A job that fails leaves the others running: their complete runs count when the sweep is run again."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.batches = 0  # launched so far: the first writes the sweep's manifest, later ones extend it

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if not isinstance(hydra_context.config_loader, ComposeOnce):
            hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from initstudy.core import signals
        from initstudy.sweep import preflight

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        configs = [loader.load_sweep_config(self.config, list(overrides)) for overrides in job_overrides]
        self.batches += 1
        preflight.check_batch(self.config, configs, job_overrides, first=self.batches == 1)
        before = submitted_jobs(self.params["submitit_folder"])
        try:
            return super().launch(job_overrides, initial_job_idx)
        except (signals.Interrupted, KeyboardInterrupt):  # stopped while the jobs are queued or running
            cancel(self.params["submitit_folder"], submitted_jobs(self.params["submitit_folder"]) - before)
            raise


def submitted_jobs(folder_pattern: str) -> set[str]:
    """The job ids submitit has recorded under the launcher's folder (``.../%j``: one folder per job)."""
    root = Path(str(folder_pattern).split("%j")[0])
    if not root.is_dir():
        return set()
    return {path.name.removesuffix(SUBMITTED) for path in root.glob(f"*/*{SUBMITTED}")}


def cancel(folder_pattern: str, job_ids: set[str]) -> None:
    """``scancel`` each job (pending, running or already ended: scancel ignores the ended ones)."""
    if not job_ids:
        return
    from submitit import SlurmJob

    log.warning("cancelling the sweep's SLURM jobs: %s", " ".join(sorted(job_ids)))
    for job_id in sorted(job_ids):
        SlurmJob(folder=folder_pattern, job_id=job_id).cancel(check=False)
