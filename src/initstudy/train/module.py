"""The LightningModule: M >= 1 networks trained at once, each exactly as if alone. A single run is a stack of one.

Training uses manual optimization over *chunks* of mini-batches (initstudy.data.datamodule): every mini-batch is
still one optimizer step, so the maths equal a plain loop's, but Lightning's per-batch machinery runs once per
chunk. Per optimizer step: one stacked forward (initstudy.train.network), each member's mean cross-entropy on
its own batch (one batched call whose gradients are each member's own), and one backward of their sum, so that
each member's gradient is its own run's (the derivative of the sum by a member's loss is exactly 1). Members
share no parameter and no reduction: the optimizer is elementwise over per-member tensors, the finiteness check
is per member, and there is no gradient norm. The optimizer is stepped unwrapped and the steps counted here
(``total_steps``): Lightning's wrapper costs ~0.45 ms of CPU per step, and float32 and bfloat16 need none of its
gradient scaling (16-mixed would; the config refuses it). Each chunk's step losses stay on the device; the
only host sync per chunk is the finiteness check that lets a diverging member stop within ``steps_per_chunk``
steps.

A member whose loss is not finite stops at the end of that chunk, with one evaluation pass right away (the
pass that closes its run) and its epoch closed. From then on it gets no gradient (its weights and optimizer
state stay as they were), no evaluation, and is left out of the loss; training stops once no member trains.

Convergence is measured at step resolution: at each of ``val_steps`` (log-spaced early steps, 1, 2, 5, 10, ...)
and every ``val_every_n_steps`` optimizer steps (inside a chunk, at the exact step) each training member gets a
full pass over the evaluation split, which lives on the device. With the pass at step 0 (Lightning's sanity pass) and at every epoch end (its validation loop) they form the step series
(``Member.step_evaluations``) that time-to-threshold is read from. With ``layer_stats_every_n_steps``, every
hidden layer's activations and back-propagated gradients are probed at step 0 and every N steps
(initstudy.nn.layer_stats), without touching what training uses.

The members are split into shards (initstudy.train.network.MemberShards), each with its own optimizer; every
step runs each shard's forward, backward and update on a thread of its own (initstudy.train.threads), and the
evaluations give each thread its shard's members. One shard (one member, a GPU, mixed precision): everything
on the calling thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from initstudy.data.datamodule import Split
from initstudy.nn import layer_stats
from initstudy.train.members import Member
from initstudy.train.network import MemberShards, StackedMLP
from initstudy.train.records import Evaluation, EvaluationSums
from initstudy.train.threads import ShardThreads


def member_mean_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy, [M, B, C] -> [M], as one batched call: the gradient it gives every
    member's logits is bit for bit that of the member's own ``F.cross_entropy`` (tests/test_stacked.py), and
    costs one op where M calls on slices of the stack cost M (each slice's backward also fills a zero
    gradient of the whole stack: M^2 work). Its loss values may differ from ``F.cross_entropy``'s on the member's
    logits alone in the last bit (the mean sums in another order): what a run records comes from :func:`recorded_losses`."""
    members, batch, classes = logits.shape
    flat = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
    return flat.view(members, batch).mean(dim=1)


def recorded_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy as ``F.cross_entropy`` computes it on the member's logits alone: one
    batched ``log_softmax`` (row by row, so each row is the member's own), then ``F.nll_loss`` per member (its
    mean reduction sums in ``F.cross_entropy``'s order). No gradient: nothing here enters the backward pass."""
    with torch.no_grad():
        log_probabilities = F.log_softmax(logits, dim=-1)
        return torch.stack([F.nll_loss(log_probabilities[m], labels[m]) for m in range(logits.shape[0])])


class InitStudyModule(pl.LightningModule):
    """Built by ``hydra.utils.instantiate(cfg.module, _partial_=True)(network=..., members=...,
    optimizer_factory=..., steps_per_epoch=...)`` (conf/module/default.yaml; initstudy.train.fit)."""

    def __init__(
        self,
        network: MemberShards,
        members: Sequence[Member],
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        steps_per_epoch: int,
        stop_on_divergence: bool = True,
        val_every_n_steps: int | None = None,
        val_steps: Sequence[int] = (),
        layer_stats_every_n_steps: int | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        super().__init__()
        # trainer.gradient_clip_val / gradient_clip_algorithm: clipped here, per member (Lightning's own
        # clipping would take the norm over the whole stack, and refuses manual optimization anyway).
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.network = network
        self.threads = ShardThreads(len(network.shards))
        self.layer_stats_every_n_steps = layer_stats_every_n_steps
        self.members = list(members)
        self.optimizer_factory = optimizer_factory
        self.steps_per_epoch = steps_per_epoch
        self.stop_on_divergence = stop_on_divergence
        self.val_every_n_steps = val_every_n_steps
        self.val_steps = frozenset(int(step) for step in val_steps)
        self.automatic_optimization = False
        self.total_steps = 0
        self.eval_seconds = 0.0  # the group's evaluation passes (timing.json of every member)
        self.just_stopped: list[int] = []  # members stopped in the last chunk (MemberRecorders closes them)
        self._sums: dict[int, EvaluationSums] = {}
        self._eval_started = 0.0

    def active_members(self) -> list[int]:
        return [m for m, member in enumerate(self.members) if member.active]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer per shard, over its members' tensors (a member's optimizer is its own either way)."""
        return [
            self.optimizer_factory([alias for aliases in shard.member_parameters() for alias in aliases])
            for shard in self.network.shards
        ]

    def _shard_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers = self.optimizers(use_pl_optimizer=False)
        return optimizers if isinstance(optimizers, list) else [optimizers]  # type: ignore[return-value]

    # ---- training -------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.layer_stats_every_n_steps and self.total_steps == 0:
            self._probe_layers()

    def _probe_layers(self) -> None:
        """Each training member's probe, on its own network (its MLP given the member's current weights): the
        plain network's operations on the member's weights."""
        split = self.trainer.datamodule.eval
        images, labels = layer_stats.probe(split.images, split.labels)
        for m in self.active_members():
            member = self.members[m]
            with torch.no_grad():
                member.model.to(self.device).load_state_dict(self.network.member_state(m))
            member.layer_stats.extend(layer_stats.measure(member.model, images, labels, self.total_steps))

    def on_train_epoch_start(self) -> None:
        for m in self.active_members():
            self.members[m].losses.start_epoch()

    def training_step(self, chunk: list[torch.Tensor], batch_idx: int) -> None:
        """``chunk``: each step's [M, B] indices into the training split (initstudy.train.batches), gathered
        one step at a time, each shard its members' rows on its own thread."""
        optimizers = self._shard_optimizers()
        active = [member.active for member in self.members]
        training = [m for m, on in enumerate(active) if on]
        split = self.trainer.datamodule.train
        step_losses = []
        for index in chunk:
            parts = self.threads.map(lambda k: self._shard_step(k, optimizers[k], split, index, active))  # noqa: B023
            step_losses.append(torch.cat(parts))
            self.total_steps += 1
            if self._evaluates_at(self.total_steps):
                self._evaluate_at_step()
            if self.layer_stats_every_n_steps and self.total_steps % self.layer_stats_every_n_steps == 0:
                self._probe_layers()
        self._count_steps(len(chunk))
        chunk_losses = torch.stack(step_losses, dim=1)  # [M, steps]: each member's row contiguous
        sizes = [index.shape[1] for index in chunk]
        for m in training:
            self.members[m].losses.add(chunk_losses[m], sizes)
            self.members[m].total_steps += len(chunk)
        if self.stop_on_divergence:
            # The one host sync per chunk, per member: a non-finite loss stops that member only.
            finite = torch.isfinite(chunk_losses).all(dim=1).tolist()
            for m in training:
                if not finite[m]:
                    self._stop(m)
        if not any(member.active for member in self.members):
            self.trainer.should_stop = True

    def _count_steps(self, steps: int) -> None:
        """The optimizer steps of a chunk, counted where Lightning counts a manual optimizer step (the loop's
        step progress, which ``trainer.global_step`` reads): the optimizers are stepped unwrapped, and
        ModelCheckpoint saves only when the global step has moved since its last save."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for _ in range(steps):
            progress.increment_ready()
            progress.increment_completed()

    def _evaluates_at(self, step: int) -> bool:
        """Whether a validation pass follows optimizer step ``step``: one of ``val_steps`` (dense early, where
        thresholds are crossed) or a multiple of ``val_every_n_steps``."""
        every = self.val_every_n_steps
        return step in self.val_steps or bool(every and step % every == 0)

    def _shard_step(
        self,
        k: int,
        optimizer: torch.optim.Optimizer,
        split: Split,
        index: torch.Tensor,
        active: Sequence[bool],
    ) -> torch.Tensor:
        """One optimizer step of shard ``k`` on its members' mini-batches (their rows of ``index``): its
        training members' summed mean losses backward (the derivative by each member's loss is 1, so each gets
        the gradient of its own loss), their gradients to their own tensors, the shard's optimizer. Returns every
        member's recorded loss (a frozen member's is not used). A shard whose members all stopped does nothing."""
        start, end = self.network.bounds[k]
        shard, mine = self.network.shards[k], list(active[start:end])
        if not any(mine):
            return torch.full((end - start,), float("nan"), device=index.device)
        x, y = split.images[index[start:end]], split.labels[index[start:end]]
        logits = shard(x)
        optimizer.zero_grad(set_to_none=True)
        shard.zero_grad(set_to_none=True)
        training = torch.tensor([i for i, on in enumerate(mine) if on], device=x.device)
        # loss.backward() as manual_backward does it at full precision (the only precision that stacks); on the
        # shard's thread, whose autograd runs there (CPU).
        member_mean_losses(logits, y)[training].sum().backward()
        shard.share_gradients(mine)
        if self.gradient_clip_val:
            self._clip_gradients(shard, mine)
        optimizer.step()
        return recorded_losses(logits.detach(), y)

    def _clip_gradients(self, shard: StackedMLP, active: Sequence[bool]) -> None:
        """Each training member's gradients clipped on their own, as Lightning clips a single network's: by
        their joint norm (``norm``) or elementwise (``value``)."""
        for aliases, on in zip(shard.member_parameters(), active, strict=True):
            if not on:
                continue
            if self.gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(aliases, self.gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(aliases, self.gradient_clip_val)

    def _stop(self, m: int) -> None:
        member = self.members[m]
        member.divergence = member.losses.divergence(self.current_epoch, self.steps_per_epoch)
        started = time.perf_counter()
        with torch.no_grad():
            member.evaluations.append(self._evaluate([m], self.trainer.datamodule.val_dataloader())[m])
        self.eval_seconds += time.perf_counter() - started
        member.active = False
        self.just_stopped.append(m)

    @torch.no_grad()
    def _evaluate_at_step(self) -> None:
        """A full pass over the evaluation split for every training member, between two optimizer steps."""
        started = time.perf_counter()
        for m, evaluation in self._evaluate(
            self.active_members(), self.trainer.datamodule.val_dataloader()
        ).items():
            self.members[m].step_evaluations.append((self.total_steps, evaluation))
        self.eval_seconds += time.perf_counter() - started

    def _evaluate(self, members: list[int], batches: object) -> dict[int, Evaluation]:
        sums = {m: EvaluationSums(self.device) for m in members}
        for batch in batches:  # type: ignore[attr-defined]
            self._add_to_sums(sums, batch)
        return {m: s.result() for m, s in sums.items()}

    def _add_to_sums(self, sums: dict[int, EvaluationSums], batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Each member in ``sums`` on ``batch`` (its single network's operations), each shard's members on that
        shard's thread."""
        images, labels = batch
        # Lightning evaluates in inference mode; grad modes are per thread, so each thread enters the caller's
        # (the sums made under inference mode can only be updated under it).
        inference = torch.is_inference_mode_enabled()

        def shard_members(k: int) -> None:
            start, end = self.network.bounds[k]
            with torch.inference_mode(inference), torch.no_grad():
                for m in range(start, end):
                    if m in sums:
                        sums[m].add(self.network.member_forward(m, images), labels)

        self.threads.map(shard_members)

    def on_train_epoch_end(self) -> None:
        for m in self.active_members():
            self.members[m].losses.end_epoch()

    # ---- evaluation: Lightning's validation loop (the sanity pass is the evaluation at init) and test loop
    def on_validation_epoch_start(self) -> None:
        self._eval_started = time.perf_counter()
        self._sums = {m: EvaluationSums(self.device) for m in self.active_members()}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def on_validation_epoch_end(self) -> None:
        for m, sums in self._sums.items():
            self.members[m].evaluations.append(sums.result())
        self.eval_seconds += time.perf_counter() - self._eval_started
        if len(self.members) == 1 and self._sums:
            # What Lightning's callbacks watch (EarlyStopping, ModelCheckpoint: conf/callbacks): a run alone
            # (runs with callbacks never share a stack) logs its pass, e.g. val/loss, to the Trainer's metrics.
            split, evaluation = self.trainer.datamodule.eval.name, self.members[0].evaluations[-1]
            self.log_dict({f"{split}/loss": evaluation.loss, f"{split}/acc": evaluation.acc}, logger=False)

    def on_test_epoch_start(self) -> None:
        # Every member, the stopped ones included: each is tested with the weights it stopped with, and keeps
        # its predicted class of every test image (test_predictions.npy).
        self._sums = {m: EvaluationSums(self.device, keep_predictions=True) for m in range(len(self.members))}

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def on_test_epoch_end(self) -> None:
        for m, sums in self._sums.items():
            self.members[m].test_evaluation = sums.result()

    def _accumulate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._add_to_sums(self._sums, batch)
