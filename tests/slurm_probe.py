"""What a Trainer inside a SLURM job sees, written down for the tests (never part of the study's code).

Loaded into every Trainer through Lightning's own extension point, the entry-point group
``pytorch_lightning.callbacks_factory`` (``tests/services.probe_path`` puts a dist-info folder naming
:func:`factory` on the job's PYTHONPATH). Inside a job that submitit started with ``srun``, Lightning's
``SLURMEnvironment`` takes over rank and world-size detection: the record shows whether it then believes in
one process or several, and which CPUs and threads the job really has. It touches no random state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment

RECORDS_ENV = "INITSTUDY_PROBE_DIR"


class Probe(pl.Callback):
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # The environment Lightning chose (a single-device strategy keeps none of its own; the connector
        # that chose it is private, and this is a test's probe).
        environment = trainer._accelerator_connector.cluster_environment
        record: dict[str, Any] = {
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_job": f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ.get('SLURM_ARRAY_TASK_ID')}",
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "slurm_cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
            "slurm_environment_detected": SLURMEnvironment.detect(),
            "cluster_environment": type(environment).__name__,
            "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "num_nodes": trainer.num_nodes,
            "num_devices": trainer.num_devices,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "machine_cpus": os.cpu_count(),
        }
        folder = Path(os.environ[RECORDS_ENV])
        name = f"{record['slurm_array_job']}.{record['slurm_restart_count']}.json"
        (folder / name).write_text(json.dumps(record, indent=1))


def factory() -> list[pl.Callback]:
    return [Probe()] if os.environ.get(RECORDS_ENV) else []
