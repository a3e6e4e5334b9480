"""Each member's own seeded batch order, served as one stacked batch per optimizer step.

Member m's epoch order is exactly its single run's (:class:`~initstudy.data.datamodule.ChunkedBatches` seeded by
(seed_m, epoch)); a step gathers ``images[index]`` with the members' index tensors stacked to [M, B], giving
[M, B, 784] images and [M, B] labels. The members share the data (same sizes by grouping), so the batch sizes,
the short last batch included, are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from initstudy.data.datamodule import ChunkedBatches, MNISTDataModule


class StackedBatches:
    """An epoch of stacked mini-batches, ``steps_per_chunk`` at a time (one Lightning batch per chunk)."""

    def __init__(self, members: Sequence[ChunkedBatches]) -> None:
        self.members = list(members)

    def __len__(self) -> int:
        return len(self.members[0])

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        first = self.members[0]
        orders = [member.batch_indices() for member in self.members]
        steps, per_chunk = len(orders[0]), first.steps_per_chunk
        for start in range(0, steps, per_chunk):
            chunk = []
            for step in range(start, min(start + per_chunk, steps)):
                index = torch.stack([order[step] for order in orders])
                chunk.append((first.split.images[index], first.split.labels[index]))
            yield chunk


class StackedDataModule(MNISTDataModule):
    """The study's DataModule (same splits, evaluation and test loaders) whose training loader serves every
    member's seeded order at once. Built by ``runner.build_datamodule`` with ``_target_`` pointing here and
    ``seeds`` (one per member)."""

    def __init__(self, *args: object, seeds: Sequence[int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seeds = list(seeds)
        self._stacked: StackedBatches | None = None

    def train_dataloader(self) -> StackedBatches:  # type: ignore[override]
        assert self.train is not None
        if self._stacked is None:
            epoch = lambda: self.trainer.current_epoch  # noqa: E731
            orders = [ChunkedBatches(self.train, self.batch_size, self.steps_per_chunk, seed, epoch)
                      for seed in self.seeds]  # fmt: skip
            self._stacked = StackedBatches(orders)
        return self._stacked
