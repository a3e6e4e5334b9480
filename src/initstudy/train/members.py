"""One network of the module's stack, as the rest of the project sees a run.

:class:`Member` holds one network's record of its training (step losses, evaluations, divergence, test pass,
step count): what the recorder (history.csv, MLflow points, epoch lines; initstudy.train.recorder) and
``runner.run_metrics`` (metrics.json) read. A single run is a stack of one member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from initstudy.nn.model import MLP
from initstudy.train.records import Divergence, Evaluation, StepLosses


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
