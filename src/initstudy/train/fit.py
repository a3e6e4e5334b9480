"""Fit one group: the single run's ``runner.fit`` for M members at once, one Outcome per member.

Each member's network is built by the project's own path (``runner.configure_process`` seeds with the member's
seed, ``runner.build_model`` constructs and initializes it), so its initial weights are its single run's, bit
for bit; the stacked network copies them. The Trainer is the single run's (``runner.build_trainer``), without a
logger: each member's MLflow child run gets its points through its own recorder. A member's timing.json holds
the group's wall times (setup, fit, epochs, evaluation), not a share of them, and says how many members shared
them (``stacked_members``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from initstudy.nn import layer_stats, weights
from initstudy.train.batches import StackedDataModule
from initstudy.train.members import Member, MemberRecorders
from initstudy.train.network import MemberShards
from initstudy.train.recorder import RunRecorder
from initstudy.train.runner import (
    Outcome,
    build_datamodule,
    build_model,
    build_trainer,
    configure_process,
    history_frame,
    job_device,
    lightning_hints_silenced,
    quiet_lightning,
    run_label,
    run_metrics,
    timing_record,
)
from initstudy.train.stacked_module import StackedModule

DATAMODULE = f"{StackedDataModule.__module__}.{StackedDataModule.__qualname__}"


def fit_group(
    cfgs: Sequence[DictConfig],
    staging: Path,
    loggers: Sequence[Any],
    job_index: int,
    positions: Sequence[str],
    threads: int = 1,
) -> list[Outcome]:
    """Train the members ``cfgs`` (one group: equal but for init and seed) as one stacked model; fit, test.
    ``threads``: the cores this group may use; where the job runs one intra-op thread on the CPU (the portable
    profile), its members are split into that many shards, each on a thread of its own (no byte changes)."""
    started = time.perf_counter()
    first = cfgs[0]
    torch_threads = configure_process(first)
    quiet_lightning()
    seeds = [cfg.seed for cfg in cfgs]
    datamodule = build_datamodule(first, job_device(first, job_index)[2], _target_=DATAMODULE, seeds=seeds)
    members, initial = [], []
    for cfg in cfgs:
        configure_process(cfg)  # the member's seed, exactly as its single run sets it before building
        model, _ = build_model(cfg, datamodule.train.images)
        initial.append(weights.snapshot(model))
        members.append(Member(model))
    device = datamodule.train.images.device
    shards = threads if torch_threads == 1 and device.type == "cpu" else 1
    network = MemberShards([member.model for member in members], shards).to(device)
    module = StackedModule(network, members, instantiate(first.optimizer), datamodule.steps_per_epoch,
                           first.module.stop_on_divergence, first.module.val_every_n_steps,
                           first.module.layer_stats_every_n_steps)  # fmt: skip
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
        outcomes.append(Outcome(metrics, history, timing, weights=saved, layer_stats=probes))
    return outcomes
