"""The LightningModule: loss, optimizer, per-step loss record, evaluation and divergence detection.

Training uses manual optimization over *chunks* of mini-batches (see ``data.datamodule``): every mini-batch
is still one optimizer step, so the maths equal a plain loop's, but Lightning's per-batch machinery runs
once per chunk. Losses stay on the device in a preallocated buffer; the only host sync per chunk is the
finiteness check that lets a diverging run stop within ``steps_per_chunk`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Divergence:
    step: int
    epoch: int
    last_finite_loss: float | None


@dataclass
class Evaluation:
    loss: float
    acc: float


class InitStudyModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        steps_per_epoch: int,
        stop_on_divergence: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer_factory
        self.steps_per_epoch = steps_per_epoch
        self.stop_on_divergence = stop_on_divergence
        self.automatic_optimization = False
        self.divergence: Divergence | None = None
        self._last_finite_loss: float | None = None
        self.total_steps = 0
        self.eval_seconds = 0.0  # wall time spent in evaluation passes (timing.json)
        self.evaluations: list[Evaluation] = []  # one per evaluation pass, epoch 0 (at init) first
        self._chunk_losses: list[torch.Tensor] = []
        self._step_sizes: list[int] = []
        self._eval_sums = torch.zeros(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._chunk_losses: list[torch.Tensor] = []  # one tensor of step losses per chunk, on the device
        self._step_sizes: list[int] = []

    def training_step(self, chunk: list[tuple[torch.Tensor, torch.Tensor]], batch_idx: int) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        losses = []
        for images, labels in chunk:
            loss = F.cross_entropy(self.model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        chunk_losses = torch.stack(losses)
        self._chunk_losses.append(chunk_losses)
        self._step_sizes.extend(len(labels) for _, labels in chunk)
        self.total_steps += len(chunk)
        # The one host sync per chunk: lets a diverging run stop within steps_per_chunk steps.
        if self.stop_on_divergence and not bool(torch.isfinite(chunk_losses).all()):
            self._record_divergence()

    def _record_divergence(self) -> None:
        losses, _ = self.epoch_step_losses()
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        finite_before = losses[:bad]
        last = float(finite_before[-1]) if len(finite_before) else self._last_finite_loss
        self.divergence = Divergence(
            step=self.current_epoch * self.steps_per_epoch + bad + 1,
            epoch=self.current_epoch + 1,
            last_finite_loss=last,
        )
        self.trainer.should_stop = True

    def epoch_step_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, batch size) of every optimizer step of the current epoch so far, on the host."""
        if not self._chunk_losses:
            return torch.empty(0), torch.empty(0)
        return torch.cat(self._chunk_losses).float().cpu(), torch.tensor(
            self._step_sizes, dtype=torch.float32
        )

    def on_train_epoch_end(self) -> None:
        losses, _ = self.epoch_step_losses()
        finite = losses[torch.isfinite(losses)]
        if len(finite):
            self._last_finite_loss = float(finite[-1])

    # ---- evaluation (Lightning's validation loop; the sanity pass is the evaluation at init) -----------
    def on_validation_epoch_start(self) -> None:
        self._eval_started = time.perf_counter()
        self._eval_sums = torch.zeros(3, device=self.device, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(dim=1) == labels).sum()
        self._eval_sums += torch.stack([loss_sum.double(), correct.double(), self._count(labels)])

    def on_validation_epoch_end(self) -> None:
        loss_sum, correct, count = self._eval_sums.tolist()
        self.evaluations.append(Evaluation(loss=loss_sum / count, acc=correct / count))
        self.eval_seconds += time.perf_counter() - self._eval_started

    @staticmethod
    def _count(labels: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float(len(labels)), device=labels.device, dtype=torch.float64)

    @torch.inference_mode()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 10_000) -> Evaluation:
        """Loss and accuracy on a whole split, outside the Trainer (used for the final test evaluation)."""
        was_training = self.model.training
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
        self.model.train(was_training)
        return Evaluation(loss=loss_sum / len(labels), acc=correct / len(labels))
