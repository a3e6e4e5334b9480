"""The LightningModule: loss, optimizer steps, per-step loss record, evaluation and divergence detection.

Training uses manual optimization over *chunks* of mini-batches (see ``data.datamodule``): every mini-batch
is still one optimizer step, so the maths equal a plain loop's, but Lightning's per-batch machinery runs
once per chunk. Backward goes through ``manual_backward``, so the Trainer's precision plugin applies
(``bf16-mixed``: autocast in every training, validation and test step). The optimizer is stepped unwrapped
and the steps counted here (``total_steps``): Lightning's wrapper, which would count them as
``trainer.global_step``, costs ~0.45 ms of CPU per step (+8 % per epoch of the default network, measured),
and float32 and bfloat16 need none of its gradient scaling (16-mixed would; it is refused in the config).
Each chunk's step losses stay on the device as one stacked tensor; the only host sync per chunk is the
finiteness check that lets a diverging run stop within ``steps_per_chunk`` steps.

Convergence is measured at step resolution: every ``val_every_n_steps`` optimizer steps (inside a chunk, at the
exact step) the module runs a full pass over the evaluation split, which lives on the device, so a pass is a
few large forward matmuls. Together with the pass at step 0 (Lightning's sanity pass) and at every epoch end
(its validation loop) they form the step series (``step_evaluations``) that time-to-threshold is read from.

With ``layer_stats_every_n_steps``, the module also probes every hidden layer's activations and back-propagated
gradients at step 0 and every N optimizer steps (initstudy.nn.layer_stats), without touching what training uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from initstudy.nn import layer_stats


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


class EvaluationSums:
    """One pass over a split: loss sum, correct predictions and images (float64 on the device, read once at
    the end) and how often each class was predicted. Shared by this module and the stacked one
    (initstudy.stacked), so that both evaluate with the same operations."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, device=device, dtype=torch.float64)
        self.predicted = torch.zeros(0, device=device, dtype=torch.int64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        predicted = logits.argmax(dim=1)
        correct = (predicted == labels).sum()
        count = torch.tensor(float(len(labels)), device=labels.device, dtype=torch.float64)
        self.sums += torch.stack([loss_sum.double(), correct.double(), count])
        per_class = torch.bincount(predicted, minlength=logits.shape[1])
        self.predicted = per_class + self.predicted if len(self.predicted) else per_class

    def result(self) -> Evaluation:
        loss_sum, correct, count = self.sums.tolist()
        return Evaluation(
            loss=loss_sum / count, acc=correct / count, predicted_per_class=self.predicted.tolist()
        )


class StepLosses:
    """Every optimizer step's training loss of one run: the current epoch's on the device (one tensor per
    chunk), their running sum in float64, and the last finite loss of earlier epochs (for the divergence
    record). Shared with the stacked module, which keeps one per member."""

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


class InitStudyModule(pl.LightningModule):
    """Built by ``hydra.utils.instantiate(cfg.module, model=..., optimizer_factory=..., steps_per_epoch=...)``
    (conf/module/default.yaml)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        steps_per_epoch: int,
        stop_on_divergence: bool = True,
        val_every_n_steps: int | None = None,
        layer_stats_every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.layer_stats_every_n_steps = layer_stats_every_n_steps
        self.layer_stats: list[dict[str, float | int | str]] = []  # layer_stats.csv's rows, step order
        self.optimizer_factory = optimizer_factory
        self.steps_per_epoch = steps_per_epoch
        self.stop_on_divergence = stop_on_divergence
        self.val_every_n_steps = val_every_n_steps
        self.automatic_optimization = False
        self.divergence: Divergence | None = None
        self.losses = StepLosses()
        self.total_steps = 0  # optimizer steps taken (the recorder's step axis)
        self.eval_seconds = 0.0  # wall time spent in the per-epoch evaluation passes (timing.json)
        self.evaluations: list[Evaluation] = []  # one per validation pass, epoch 0 (at init) first
        self.test_evaluation: Evaluation | None = None  # trainer.test's pass over the test split
        # (optimizer step, evaluation) every val_every_n_steps steps, in step order (epoch ends not included)
        self.step_evaluations: list[tuple[int, Evaluation]] = []
        self._eval: EvaluationSums | None = None
        self._eval_started = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    # ---- training -------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.layer_stats_every_n_steps and self.total_steps == 0:
            self._probe_layers()

    def _probe_layers(self) -> None:
        split = self.trainer.datamodule.eval
        images, labels = layer_stats.probe(split.images, split.labels)
        self.layer_stats.extend(layer_stats.measure(self.model, images, labels, self.total_steps))

    def on_train_epoch_start(self) -> None:
        self.losses.start_epoch()

    def training_step(self, chunk: list[tuple[torch.Tensor, torch.Tensor]], batch_idx: int) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        losses = []
        for images, labels in chunk:
            loss = F.cross_entropy(self.model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            self.total_steps += 1
            if self.val_every_n_steps and self.total_steps % self.val_every_n_steps == 0:
                self._evaluate_at_step()
            if self.layer_stats_every_n_steps and self.total_steps % self.layer_stats_every_n_steps == 0:
                self._probe_layers()
        chunk_losses = torch.stack(losses)
        self.losses.add(chunk_losses, [len(labels) for _, labels in chunk])
        # The one host sync per chunk: lets a diverging run stop within steps_per_chunk steps.
        if self.stop_on_divergence and not bool(torch.isfinite(chunk_losses).all()):
            self._record_divergence()

    @torch.no_grad()
    def _evaluate_at_step(self) -> None:
        """A full pass over the evaluation split now, between two optimizer steps (the Trainer's precision
        context of the training step applies, as in its validation loop)."""
        started = time.perf_counter()
        self._start_evaluation()
        for batch in self.trainer.datamodule.val_dataloader():
            self._accumulate(batch)
        self.step_evaluations.append((self.total_steps, self._finish_evaluation()))
        self.eval_seconds += time.perf_counter() - started

    def _record_divergence(self) -> None:
        self.divergence = self.losses.divergence(self.current_epoch, self.steps_per_epoch)
        self.trainer.should_stop = True

    def epoch_step_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, batch size) of every optimizer step of the current epoch so far, on the host."""
        return self.losses.epoch()

    def mean_step_loss(self) -> float | None:
        """The mean of every optimizer step's training loss: the area under the per-step loss curve divided by
        the steps (a convergence endpoint: lower = faster). NaN once a loss was not finite."""
        return self.losses.mean()

    def on_train_epoch_end(self) -> None:
        self.losses.end_epoch()

    # ---- evaluation: Lightning's validation loop (the sanity pass is the evaluation at init) and test loop
    def on_validation_epoch_start(self) -> None:
        self._eval_started = time.perf_counter()
        self._start_evaluation()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def on_validation_epoch_end(self) -> None:
        self.evaluations.append(self._finish_evaluation())
        self.eval_seconds += time.perf_counter() - self._eval_started

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def on_test_epoch_end(self) -> None:
        self.test_evaluation = self._finish_evaluation()

    def _start_evaluation(self) -> None:
        self._eval = EvaluationSums(self.device)

    def _accumulate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        self._eval.add(self.model(images), labels)

    def _finish_evaluation(self) -> Evaluation:
        return self._eval.result()
