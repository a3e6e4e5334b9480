"""What the project's launchers share (hydra_plugins.initstudy_stacked): the mark that they check each batch
before running it, and Hydra's config loader composing each job of a sweep once. Light: Hydra imports every
launcher plugin at start-up.

:class:`ChecksBatches`: a launcher that calls :func:`initstudy.sweep.preflight.check_batch` on each batch.

Hydra composes every job of a grid twice: the sweeper checks the batch (``Sweeper.validate_batch_is_legal``,
"this repeats work the launcher will do") and the launcher composes it again to run it, ~0.3 s each here;
for the 525 jobs of the depth experiment that is minutes. :class:`ComposeOnce` keeps what Hydra's own
``load_sweep_config`` returned for a job's overrides and hands out copies, so the sweeper's check, the
pre-flight's (:func:`initstudy.sweep.preflight.check_batch`) and the launcher all see the config Hydra
composed, composed once. The cache lives on the loader object the launcher installs on the
``HydraContext`` it shares with its sweeper (:mod:`hydra_plugins.initstudy_stacked`), and goes with it.
"""

from __future__ import annotations

import copy
from typing import Any

from hydra.core.config_loader import ConfigLoader
from omegaconf import DictConfig


class ChecksBatches:
    """A launcher that calls :func:`initstudy.sweep.preflight.check_batch` on every batch Hydra's sweeper hands
    it, before running any of it. Under another launcher (Hydra's basic or joblib) each job is checked as it
    starts (``Preflight.on_job_start``)."""


class ComposeOnce(ConfigLoader):
    """Hydra's config loader, with ``load_sweep_config`` remembered per job overrides (one loader serves one
    launch, whose sweep config is fixed)."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.hits = 0

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = tuple(sweep_overrides)
        if key in self.composed:
            self.hits += 1
        else:
            self.composed[key] = self.loader.load_sweep_config(master_config, sweep_overrides)
        return copy.deepcopy(self.composed[key])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into every job of a SLURM array with the launcher: without the other jobs' configs."""
        return {"loader": self.loader, "composed": {}, "hits": 0}

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)
