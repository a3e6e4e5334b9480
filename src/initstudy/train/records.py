"""What one network's training leaves behind, as the module accumulates it: every optimizer step's loss, each
evaluation pass, and where it diverged. One of each per member (initstudy.train.members), read by the
recorder (history.csv, MLflow) and ``runner.run_metrics`` (metrics.json)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Divergence:
    step: int
    epoch: int
    last_finite_loss: float | None


@dataclass
class Evaluation:
    loss: float
    acc: float
    predicted_per_class: list[int]  # how often each class was predicted (symmetry evidence)
    # [2, images] uint8 in the split's order, kept for the test pass only: row 0 every image's true class, row 1
    # its predicted class. The report pairs two runs image by image and resamples the test images
    # (initstudy.report.image_bootstrap) from the run folder alone, without the data set.
    predictions: np.ndarray | None = field(default=None, compare=False, repr=False)


class EvaluationSums:
    """One pass over a split: loss sum, correct predictions and images (float64 on the device, read once at
    the end) and how often each class was predicted; with ``keep_predictions``, every image's true and predicted
    class in the order the batches come (the evaluation batches are never shuffled)."""

    def __init__(self, device: torch.device, keep_predictions: bool = False) -> None:
        self.sums = torch.zeros(3, device=device, dtype=torch.float64)
        self.predicted = torch.zeros(0, device=device, dtype=torch.int64)
        self.keep_predictions = keep_predictions
        self.classes: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        predicted = logits.argmax(dim=1)
        correct = (predicted == labels).sum()
        count = torch.tensor(float(len(labels)), device=labels.device, dtype=torch.float64)
        self.sums += torch.stack([loss_sum.double(), correct.double(), count])
        per_class = torch.bincount(predicted, minlength=logits.shape[1])
        self.predicted = per_class + self.predicted if len(self.predicted) else per_class
        if self.keep_predictions:
            self.classes.append(torch.stack([labels, predicted]).to(torch.uint8))

    def result(self) -> Evaluation:
        loss_sum, correct, count = self.sums.tolist()
        kept = torch.cat(self.classes, dim=1).cpu().numpy() if self.classes else None
        return Evaluation(
            loss=loss_sum / count,
            acc=correct / count,
            predicted_per_class=self.predicted.tolist(),
            predictions=kept if self.keep_predictions else None,
        )


class StepLosses:
    """Every optimizer step's training loss of one run: the current epoch's on the device (one tensor per
    chunk), their running sum in float64, and the last finite loss of earlier epochs (for the divergence
    record). The module keeps one per member."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.total = torch.zeros((), dtype=torch.float64)  # sum of every step's loss, on the device
        self.steps = 0
        self.last_finite: float | None = None

    def start_epoch(self) -> None:
        self.chunks, self.sizes = [], []

    def add(self, losses: torch.Tensor, sizes: list[int]) -> None:
        """One chunk: its steps' losses (a 1-D tensor on the device) and batch sizes."""
        self.chunks.append(losses)
        self.total = self.total.to(losses.device) + losses.double().sum()
        self.sizes.extend(sizes)
        self.steps += len(sizes)

    def epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, batch size) of every optimizer step of the current epoch so far, on the host."""
        if not self.chunks:
            return torch.empty(0), torch.empty(0)
        return torch.cat(self.chunks).float().cpu(), torch.tensor(self.sizes, dtype=torch.float32)

    def mean(self) -> float | None:
        return float(self.total) / self.steps if self.steps else None

    def end_epoch(self) -> None:
        losses, _ = self.epoch()
        finite = losses[torch.isfinite(losses)]
        if len(finite):
            self.last_finite = float(finite[-1])

    def divergence(self, epoch: int, steps_per_epoch: int) -> Divergence:
        """The record of the first non-finite loss of the current epoch (``epoch`` counted from 0)."""
        losses, _ = self.epoch()
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        finite_before = losses[:bad]
        last = float(finite_before[-1]) if len(finite_before) else self.last_finite
        return Divergence(step=epoch * steps_per_epoch + bad + 1, epoch=epoch + 1, last_finite_loss=last)
