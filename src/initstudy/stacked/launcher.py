"""``hydra/launcher=stacked``: the basic launcher's jobs, with the jobs that can share a model trained as one.

Hydra's launcher API, as its BasicLauncher uses it: ``config_loader.load_sweep_config`` composes each job
(the batch is then checked as a whole: ``initstudy.sweep.preflight.check_batch``), ``run_job`` runs it
(output folder, ``.hydra/`` files, job logging, callbacks, JobReturn). Planned units
(initstudy.stacked.grouping) run in job order in this process, or with ``n_jobs`` > 1 in as many worker
processes (initstudy.stacked.workers, given :func:`run_unit`), each unit as here (:func:`run_unit`):

- a single job: ``run_job`` with the sweep's own task function (``initstudy.train.app.hydra_job``), unchanged;
- a group: ``run_job`` per member with :func:`initstudy.train.fit.job_spec` as the task, so that every member
  passes through Hydra's job machinery and the pre-flight's verdict (``on_job_start``, ``preflight.admit``) as
  a single job does; then the admitted members train together (``initstudy.train.fit.train_group``) and each member's
  JobReturn gets its own result: the objective, or FAILED with its error. Hydra's ``on_job_end`` callbacks
  have then already run, before training (the project registers none).

While a group trains, each member's job log file (``hydra.job_logging``'s file handler: ``train.log`` in its
staging folder) receives the group's log, whose lines name the run they concern.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from initstudy.runs import rundir
from initstudy.stacked import grouping
from initstudy.sweep import jobs, preflight
from initstudy.sweep.launching import ComposeOnce

log = logging.getLogger(__name__)


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    max_models: int,
    n_jobs: int = 1,
    threads: int = 1,
    first: bool = True,
) -> list[JobReturn]:
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    configs = [job_config(hydra_context, config, overrides, initial_job_idx + i)
               for i, overrides in enumerate(job_overrides)]  # fmt: skip
    preflight.check_batch(config, configs, job_overrides, first)  # every job of the batch, before any runs
    candidates = [
        grouping.Candidate(i, jobs.task_config(cfg), is_complete(cfg)) for i, cfg in enumerate(configs)
    ]
    loader = hydra_context.config_loader
    if isinstance(loader, ComposeOnce):
        log.info("job configs: %d composed by Hydra, %d reused (the sweeper's check and this launcher's)",
                 len(loader.composed), loader.hits)  # fmt: skip
    workers = grouping.worker_count(n_jobs)
    units = grouping.plan(candidates, max_models, workers)
    workers = min(workers, len(units))
    unit_threads = grouping.threads_per_unit(threads, workers)
    groups = [unit for unit in units if len(unit) > 1]
    log.info("Launching %d jobs: %d in %d stacked group(s) of at most %d, %d one by one; %d worker process(es), "
             "%d thread(s) per group", len(configs), sum(map(len, groups)), len(groups), max_models,
             len(units) - len(groups), workers, unit_threads)  # fmt: skip
    for unit in units:
        for i in unit:
            log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(job_overrides[i])))
    for candidate in candidates:
        reason = None if candidate.complete else grouping.unsupported(candidate.cfg)
        if reason is not None:
            log.info("#%d trains alone: %s cannot share a stacked model (docs/stacked.md)",
                     initial_job_idx + candidate.index, reason)  # fmt: skip
    unit_configs = [{i: configs[i] for i in unit} for unit in units]
    if workers > 1:
        from initstudy.stacked.workers import run_units

        returns = run_units(hydra_context, task_function, unit_configs, workers, unit_threads, run_unit)
    else:
        returns = {}
        for unit in unit_configs:
            returns.update(run_unit(hydra_context, task_function, unit, unit_threads))
            configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[i] for i in range(len(configs))]


def job_config(
    hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str], index: int
) -> DictConfig:
    """One job's config, composed as Hydra's BasicLauncher composes it."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = index
        sweep_config.hydra.job.num = index
    return sweep_config


def output_dir(cfg: DictConfig) -> Path:
    """Where ``run_job`` will put the job: ``hydra.sweep.dir``/``hydra.sweep.subdir``, absolute."""
    return Path(os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))))


def is_complete(cfg: DictConfig) -> bool:
    """Whether the job's run folder already holds its finished run (then it is not stacked: resume skips it)."""
    return rundir.is_complete(output_dir(cfg), rundir.run_identity(jobs.task_config(cfg)))


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
    from initstudy.train.fit import job_spec, objective, train_group

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
