"""Running one unit of a launch plan inside a worker: a single job exactly as Hydra's basic launcher would
(``run_job``), or a stacked group whose members each keep their own job folder, logging and return value."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_unit(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    configs: dict[int, DictConfig],
    threads: int = 1,
) -> dict[int, JobReturn]:
    """One unit of the plan, by job index: a single job through Hydra's ``run_job``, or a stacked group on
    ``threads``."""
    if len(configs) == 1:
        ((i, cfg),) = configs.items()
        return {i: run_one(hydra_context, task_function, cfg)}
    return run_group(hydra_context, configs, threads)


def run_one(hydra_context: HydraContext, task_function: TaskFunction, cfg: DictConfig) -> JobReturn:
    return run_job(hydra_context=hydra_context, task_function=task_function, config=cfg,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")  # fmt: skip


def run_group(
    hydra_context: HydraContext, configs: dict[int, DictConfig], threads: int = 1
) -> dict[int, JobReturn]:
    """Each member through ``run_job`` (admitted or refused as a single job), then the admitted ones trained
    as one group; each JobReturn then carries its member's result."""
    from initstudy.train.app import job_spec, objective
    from initstudy.train.group import train_group

    returns = {i: run_one(hydra_context, job_spec, cfg) for i, cfg in configs.items()}
    admitted = {i: ret.return_value for i, ret in returns.items() if ret.status == JobStatus.COMPLETED}
    if not admitted:
        return returns
    with member_logs([configs[i] for i in admitted]):
        try:
            results = train_group(list(admitted.values()), threads)
        except Exception as error:  # the fit failed: every member's job failed with it
            log.error("stacked group of %d failed: %s: %s", len(admitted), type(error).__name__, error)
            results = [error] * len(admitted)
    for i, result in zip(admitted, results, strict=True):
        if isinstance(result, Exception):
            returns[i].status, returns[i].return_value = JobStatus.FAILED, result
        else:
            returns[i].return_value = objective(result)
    return returns


@contextlib.contextmanager
def member_logs(configs: Sequence[DictConfig]) -> Iterator[None]:
    """The first member's job logging (console and its file), plus a file handler for each other member's job
    log, while the group trains."""
    configure_log(configs[0].hydra.job_logging, configs[0].hydra.verbose)
    handlers = []
    for cfg in configs[1:]:
        filename = OmegaConf.select(cfg, "hydra.job_logging.handlers.file.filename")
        if not filename:
            continue
        handler = logging.FileHandler(str(filename), delay=True)
        fmt = OmegaConf.select(cfg, "hydra.job_logging.formatters.simple.format")
        handler.setFormatter(logging.Formatter(fmt))
        logging.getLogger().addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
