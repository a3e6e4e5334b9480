"""From an admitted Hydra job to its trained run, in one place: the job's spec (:func:`job_spec`); the runs of
a group (one run is a group of one) resumed, begun, fitted together and finished (:func:`train_group`); the
fit itself (:func:`fit`: DataModule, networks, LightningModule and Trainer from their config groups,
``trainer.fit``, the test pass); and how each member is seeded (:func:`configure_process`) and built
(:func:`build_model`). ``init`` and ``seed`` reach the weights here: the stacked launcher (initstudy.stacked)
hands each job's config to :func:`job_spec` and the admitted jobs to :func:`train_group`.

Per run: a complete run folder is skipped (``runner.resume``); every other run begins an attempt (staging
folder, numerics, MLflow child run: ``runner.begin``); the runs still to train are fitted together as one
stacked model; then each run's results, marker, promotion and FINISHED status (``runner.finish``). A failure
while fitting fails every attempt; a failure while recording fails only that run's. :func:`train_run` is one
run: the basic, joblib and SLURM launchers' path.

Each member's network is built by the run's own path (:func:`configure_process` seeds with the member's seed,
:func:`build_model` constructs and initializes it), so its initial weights are those of the run alone, bit for
bit; the stacked network copies them. The Trainer (``runner.build_trainer``) has no logger: each member's MLflow
child run gets its points through its own recorder. A member's timing.json holds the group's wall times
(setup, fit, epochs, evaluation), not a share of them, and says how many members shared them
(``stacked_members``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from initstudy.config import numerics
from initstudy.core import collector
from initstudy.nn import layer_stats, weights
from initstudy.nn.model import MLP
from initstudy.runs.rundir import run_identity
from initstudy.sweep import jobs, preflight
from initstudy.train.members import Member
from initstudy.train.network import MemberShards
from initstudy.train.recorder import MemberRecorders, RunRecorder
from initstudy.train.runner import (
    Attempt,
    Outcome,
    begin,
    build_datamodule,
    build_trainer,
    collect_previous_run,
    finish,
    history_frame,
    job_device,
    lightning_hints_silenced,
    quiet_lightning,
    resume,
    run_label,
    run_metrics,
    timing_record,
)
from initstudy.train.spec import JobSpec

LOG_LEVEL_ENV = "INITSTUDY_LOG_LEVEL"


def apply_log_level() -> None:
    """$INITSTUDY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) for the study's own loggers; INFO by default.
    Hydra's own: hydra.job_logging.root.level=WARNING, or hydra/job_logging=disabled."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("initstudy").setLevel(getattr(logging, level, logging.INFO))


def job_spec(cfg: DictConfig) -> JobSpec:
    """Inside Hydra's job (``run_job``): the pre-flight's verdict on this job, its log level and numerics, and
    where it trains (the run folder's staging folder, where Hydra also wrote its files)."""
    hydra_cfg = HydraConfig.get()
    final = Path(hydra_cfg.runtime.output_dir)
    preflight.admit(final)  # the pre-flight's verdict on this job
    job_index = hydra_cfg.job.num if hydra_cfg.job.get("num") is not None else 0
    apply_log_level()
    # A job process that did not inherit the profile's environment (SLURM with --export=NONE) gets it here,
    # before its first torch import; one that did (basic launcher, loky, submitit) is checked.
    numerics.apply_before_torch(numerics.from_config(cfg.numerics))
    # Hydra's job number, as Hydra logs it.
    position = f"#{job_index} " if hydra_cfg.mode == RunMode.MULTIRUN else ""
    return JobSpec(cfg, final, jobs.staging_for(hydra_cfg), run_identity(cfg), job_index, position)


def objective(metrics: dict[str, Any]) -> float | None:
    """What a tuning sweeper maximises: the held-out validation accuracy (the pre-flight refuses to tune
    without a validation split: tuning on the test set would leak it into the choice)."""
    return metrics.get("val/acc", metrics.get("test/acc"))


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


def configure_process(cfg: DictConfig) -> int:
    """Per-job process state, set explicitly: launchers reuse processes, so nothing may leak between jobs.
    Threads, flush-to-zero and deterministic algorithms come from the numerics profile, which also checks
    that the process runs the kernels it pins (initstudy.config.numerics); returns the thread count."""
    threads = numerics.apply_in_process(numerics.from_config(cfg.numerics))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return threads


def init_batch(train_images: torch.Tensor, initializer: Any, seed: int) -> torch.Tensor:
    """A seeded random batch of training images for data-dependent initializers (LSUV)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train_images), generator=generator)[: initializer.batch_size]
    return train_images[index.to(train_images.device)]


def build_model(cfg: DictConfig, train_images: torch.Tensor) -> tuple[MLP, Any]:
    """The network of ``cfg`` at step 0: constructed, then initialized (with a data batch if it needs one).
    Call after seeding: the draws then equal the training run's."""
    model = instantiate(cfg.model)
    initializer = instantiate(cfg.init)
    batch = init_batch(train_images, initializer, cfg.seed) if initializer.needs_data else None
    initializer(model, batch=batch)
    return model, initializer


# At full precision shards may run on threads of their own; autocast (mixed precision) is a thread-local
# state, so there everything stays on the calling thread.
FULL_PRECISION = ("32", "32-true")


def fit(
    cfgs: Sequence[DictConfig],
    staging: Path,
    loggers: Sequence[Any],
    job_index: int,
    positions: Sequence[str],
    threads: int = 1,
) -> list[Outcome]:
    """Train the members ``cfgs`` (one run, or a group equal but for init and seed) as one stacked model; fit,
    test. ``threads``: the cores this group may use; where the job runs one intra-op thread on the CPU at full
    precision (the portable profile), its members are split into that many shards, each on a thread of its
    own (no byte changes)."""
    started = time.perf_counter()
    first = cfgs[0]
    torch_threads = configure_process(first)
    quiet_lightning()
    seeds = [cfg.seed for cfg in cfgs]
    datamodule = build_datamodule(first, job_device(first, job_index)[2], seeds=seeds)
    members, initial = [], []
    for cfg in cfgs:
        configure_process(cfg)  # the member's seed, set before building exactly as for a run alone
        model, _ = build_model(cfg, datamodule.train.images)
        initial.append(weights.snapshot(model))
        members.append(Member(model))
    device = datamodule.train.images.device
    full_precision = str(first.trainer.precision) in FULL_PRECISION
    shards = threads if torch_threads == 1 and device.type == "cpu" and full_precision else 1
    network = MemberShards([member.model for member in members], shards).to(device)
    # conf/module's settings, then the objects (as keyword arguments to instantiate, Hydra would turn the
    # members, dataclasses, into configs).
    module = instantiate(first.module, _partial_=True)(
        network=network,
        members=members,
        optimizer_factory=instantiate(first.optimizer),
        steps_per_epoch=datamodule.steps_per_epoch,
        gradient_clip_val=first.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=first.trainer.get("gradient_clip_algorithm") or "norm",
    )
    recorders = [RunRecorder(position + run_label(cfg), datamodule.eval.name)
                 for cfg, position in zip(cfgs, positions, strict=True)]  # fmt: skip
    with lightning_hints_silenced():
        trainer = build_trainer(first, job_index, None, [MemberRecorders(recorders, list(loggers))], staging)
        setup_seconds = time.perf_counter() - started
        try:
            trainer.fit(module, datamodule=datamodule)
            fit_seconds = time.perf_counter() - started - setup_seconds
            trainer.test(module, datamodule=datamodule, verbose=False)
        finally:
            module.threads.close()
    outcomes = []
    for m, (cfg, member, recorder) in enumerate(zip(cfgs, members, recorders, strict=True)):
        member.model.load_state_dict(network.member_state(m))
        history = history_frame(recorder)
        timing = timing_record(started, setup_seconds, fit_seconds, recorder, module.eval_seconds, torch_threads,
                               str(datamodule.train.images.device))  # fmt: skip
        saved = {weights.INITIAL: initial[m], weights.FINAL: weights.snapshot(member.model)}
        metrics = run_metrics(cfg, member, datamodule, history)  # type: ignore[arg-type]
        timing = {**timing, "stacked_members": len(cfgs), "stacked_shards": len(network.shards)}
        probes = layer_stats.frame(member.layer_stats) if module.layer_stats_every_n_steps else None
        predictions = member.test_evaluation.predictions if member.test_evaluation else None
        outcomes.append(Outcome(metrics, history, timing, weights=saved, layer_stats=probes,
                                test_predictions=predictions))  # fmt: skip
    return outcomes
