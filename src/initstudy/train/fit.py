"""Fit: DataModule, networks, LightningModule and Trainer from their config groups; ``trainer.fit``; the test pass.
One Outcome per member: a single run is a group of one.

Each member's network is built by the project's own path (``runner.configure_process`` seeds with the member's
seed, ``runner.build_model`` constructs and initializes it), so its initial weights are those of the run alone,
bit for bit; the stacked network copies them. The Trainer (``runner.build_trainer``) has no logger: each
member's MLflow child run gets its points through its own recorder. A member's timing.json holds the group's
wall times (setup, fit, epochs, evaluation), not a share of them, and says how many members shared them
(``stacked_members``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from initstudy.nn import layer_stats, weights
from initstudy.train.members import Member
from initstudy.train.network import MemberShards
from initstudy.train.recorder import MemberRecorders, RunRecorder
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
