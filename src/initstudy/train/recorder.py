"""A Lightning callback that turns a run into its history: per-epoch metrics and interval train loss.

It reads what the module accumulated on the device once per epoch (no per-step host sync), prints one
concise line per epoch, and sends the epoch's points to MLflow in a single ``log_batch`` call.

The interval is the Trainer's own ``log_every_n_steps`` (``trainer.log_every_n_steps``, from conf/trainer),
counted in optimizer steps: one ``train/loss_step`` point, the window's mean, whenever the step count
reaches a multiple of it. Lightning's own on-step flush (``self.log(on_step=True)``) cannot do this here: it
counts Lightning batches, which are chunks of ``steps_per_chunk`` optimizer steps.

The evaluation split also gets a step series, ``<split>/loss_step`` and ``<split>/acc_step``: the pass at step 0,
at ``module.val_steps``, every ``module.val_every_n_steps`` steps and every epoch end, with the optimizer step as
its position. Time to a threshold is read from it (initstudy.train.convergence).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import psutil
import pytorch_lightning as pl
import torch

from initstudy.tracking import store
from initstudy.train.members import Member

log = logging.getLogger(__name__)


class RunRecorder:
    """One member's recorder, driven by :class:`MemberRecorders` at the moments a Trainer of its own would call
    a callback."""

    def __init__(self, label: str, eval_split: str) -> None:
        self.label, self.eval_split = label, eval_split
        self.rows: list[dict[str, float | int | str]] = []  # long format: epoch, step, metric, value
        self.epoch_seconds: list[float] = []
        self._losses: list[torch.Tensor] = []  # every optimizer step's loss, for interval means
        self._sizes: list[torch.Tensor] = []
        self._epoch_start = 0.0
        self.logging_seconds = 0.0  # wall time spent writing to MLflow (timing.json)
        self.process_start_to_training: float | None = None
        # The same span in CPU seconds (user + system) of this process: what start-up costs apart from what
        # else the machine runs (benchmarks/bench_stacked.py compares it with the bare imports').
        self.process_cpu_to_training: float | None = None

    # rows -----------------------------------------------------------------------------------------------
    def _add(self, epoch: int, step: int, metric: str, value: float) -> None:
        self.rows.append({"epoch": epoch, "step": step, "metric": metric, "value": value})

    def _add_evaluation(self, module: Member, epoch: int, step: int) -> dict[str, float]:
        if len(module.evaluations) <= epoch:
            return {}
        evaluation = module.evaluations[epoch]
        points = {f"{self.eval_split}/loss": evaluation.loss, f"{self.eval_split}/acc": evaluation.acc}
        for metric, value in points.items():
            self._add(epoch, step, metric, value)
        return points

    def _add_step_series(self, module: Member, epoch: int, first_step: int, step: int) -> list:
        """The evaluation passes of steps (first_step, step], the epoch end's included: (name, value, step)."""
        passes = [(at, e) for at, e in module.step_evaluations if first_step < at < step]
        if len(module.evaluations) > epoch:
            passes.append((step, module.evaluations[epoch]))
        points = []
        for at, evaluation in passes:
            for name, value in (("loss_step", evaluation.loss), ("acc_step", evaluation.acc)):
                self._add(epoch, at, f"{self.eval_split}/{name}", value)
                points.append((f"{self.eval_split}/{name}", value, at))
        return points

    # hooks ------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: MemberTrainer, pl_module: Member) -> None:
        process = psutil.Process()
        self.process_start_to_training = time.time() - process.create_time()
        self.process_cpu_to_training = sum(process.cpu_times()[:2])
        # The sanity pass over the whole evaluation split ran before training: that is epoch 0 (at init).
        points = self._add_evaluation(pl_module, epoch=0, step=0)
        series = self._add_step_series(pl_module, epoch=0, first_step=-1, step=0)
        self._log_to_mlflow(trainer, {name: (value, 0) for name, value in points.items()}, series=series)

    def on_train_epoch_start(self, trainer: MemberTrainer, pl_module: Member) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: MemberTrainer, pl_module: Member) -> None:
        epoch = trainer.current_epoch + 1
        losses, sizes = pl_module.epoch_step_losses()
        step = pl_module.total_steps
        first_step = step - len(losses)
        train_loss = float((losses * sizes).sum() / sizes.sum()) if len(losses) else math.nan
        self._add(epoch, step, "train/loss", train_loss)
        points = {"train/loss": (train_loss, epoch)}
        for name, value in self._add_evaluation(pl_module, epoch, step).items():
            points[name] = (value, epoch)
        interval = self._interval_points(losses, sizes, first_step, epoch, trainer.log_every_n_steps)
        series = self._add_step_series(pl_module, epoch, first_step, step)
        self._log_to_mlflow(trainer, points, interval, series)
        # An epoch's cost as a user pays it: its training steps, its evaluation pass and its MLflow write.
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        summary = "  ".join(f"{name} {value:.4f}" for name, (value, _) in points.items())
        log.info(
            "[%s] epoch %d/%d  %s  (%.2f s)",
            self.label,
            epoch,
            trainer.max_epochs,
            summary,
            self.epoch_seconds[-1],
        )

    def _interval_points(
        self, losses: torch.Tensor, sizes: torch.Tensor, first_step: int, epoch: int, n: int
    ) -> list[tuple[float, int]]:
        """Mean train loss over each window of ``n`` optimizer steps ending in this epoch."""
        self._losses.append(losses)
        self._sizes.append(sizes)
        all_losses, all_sizes = torch.cat(self._losses), torch.cat(self._sizes)
        points = []
        for end in range(n, first_step + len(losses) + 1, n):
            if end <= first_step:
                continue
            window = slice(end - n, end)
            value = float((all_losses[window] * all_sizes[window]).sum() / all_sizes[window].sum())
            self._add(epoch, end, "train/loss_step", value)
            points.append((value, end))
        return points

    def _log_to_mlflow(
        self,
        trainer: MemberTrainer,
        points: dict[str, tuple[float, int]],
        interval: list[tuple[float, int]] = (),  # type: ignore[assignment]
        series: list[tuple[str, float, int]] = (),  # type: ignore[assignment]
    ) -> None:
        """One batched write per epoch instead of one per metric and step."""
        logger = trainer.logger
        if logger is None or not hasattr(logger, "run_id"):
            return
        started = time.perf_counter()
        points = [(name, value, step) for name, (value, step) in points.items()]
        points += [("train/loss_step", value, step) for value, step in interval]
        points += list(series)
        store.log_points(logger.experiment, logger.run_id, points)
        self.logging_seconds += time.perf_counter() - started


@dataclass
class MemberTrainer:
    """What the recorder reads from the Trainer, with the member's own MLflow logger (the Trainer has none)."""

    trainer: pl.Trainer
    logger: Any

    @property
    def current_epoch(self) -> int:
        return self.trainer.current_epoch

    @property
    def max_epochs(self) -> int | None:
        return self.trainer.max_epochs

    @property
    def log_every_n_steps(self) -> int:
        return self.trainer.log_every_n_steps


class MemberRecorders(pl.Callback):
    """One :class:`RunRecorder` per member, called at the moments a Trainer of the member's own would call it:
    after the evaluation at step 0, at each epoch start and end while the member trains, and at the end of the
    chunk in which it stopped (its last epoch ends there; its last evaluation pass ran just before)."""

    def __init__(self, recorders: list[RunRecorder], loggers: list[Any]) -> None:
        self.recorders, self.loggers = recorders, loggers

    def _each(self, trainer: pl.Trainer, module: Any, hook: str, members: list[int]) -> None:
        for m in members:
            getattr(self.recorders[m], hook)(MemberTrainer(trainer, self.loggers[m]), module.members[m])

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._each(trainer, pl_module, "on_train_start", list(range(len(self.recorders))))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._each(trainer, pl_module, "on_train_epoch_start", pl_module.active_members())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        stopped, pl_module.just_stopped = pl_module.just_stopped, []
        self._each(trainer, pl_module, "on_train_epoch_end", stopped)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._each(trainer, pl_module, "on_train_epoch_end", pl_module.active_members())
