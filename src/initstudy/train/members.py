"""One member of a stacked group as the rest of the project sees a single run.

:class:`Member` holds what ``InitStudyModule`` holds for its one network (step losses, evaluations, divergence,
test pass, step count) and answers the same attributes, so that the project's own :class:`RunRecorder`
(history.csv, MLflow points, epoch lines) and ``runner.run_metrics`` (metrics.json) serve a member unchanged.
:class:`MemberRecorders` drives one recorder per member from the group's Trainer hooks, with a per-member view
of the Trainer that carries the member's own MLflow logger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch

from initstudy.nn.model import MLP
from initstudy.train.module import Divergence, Evaluation, StepLosses
from initstudy.train.recorder import RunRecorder


@dataclass
class Member:
    """A member's own record of its training (the attributes the recorder and run_metrics read)."""

    model: MLP  # its network: initialized, then (after the test pass) holding its final weights
    losses: StepLosses = field(default_factory=StepLosses)
    evaluations: list[Evaluation] = field(default_factory=list)  # step 0, then one per epoch end
    step_evaluations: list[tuple[int, Evaluation]] = field(default_factory=list)
    test_evaluation: Evaluation | None = None
    divergence: Divergence | None = None
    total_steps: int = 0
    active: bool = True  # trains on; False once its run would have stopped (diverged)
    layer_stats: list[dict[str, float | int | str]] = field(default_factory=list)  # layer_stats.csv's rows

    def epoch_step_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.losses.epoch()

    def mean_step_loss(self) -> float | None:
        return self.losses.mean()


@dataclass
class MemberTrainer:
    """What the recorder reads from the Trainer, with the member's logger in place of the group's (none)."""

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
    """One :class:`RunRecorder` per member, called at the moments a single run's Trainer would call it: after
    the evaluation at step 0, at each epoch start and end while the member trains, and at the end of the chunk
    in which it stopped (a single run's last epoch ends there; its last evaluation pass ran just before)."""

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
