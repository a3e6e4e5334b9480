"""Each member's own seeded batch order, served as one stacked batch per optimizer step.

Member m's epoch order is exactly its single run's (:class:`~initstudy.data.datamodule.ChunkedBatches` seeded by
(seed_m, epoch)); a chunk is the members' index tensors of each step, stacked to [M, B], and the module gathers
``images[index]`` ([M, B, 784] images, [M, B] labels) when the step runs: a chunk of gathered images would hold
32 steps x M members of them (128 MB for 20 members), twice while Lightning fetches the next chunk ahead.
The members share the data (same sizes by grouping), so the batch sizes, the short last batch included, are
the same for all of them.
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

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        orders = [member.batch_indices() for member in self.members]
        steps, per_chunk = len(orders[0]), self.members[0].steps_per_chunk
        for start in range(0, steps, per_chunk):
            yield [
                torch.stack([order[step] for order in orders])
                for step in range(start, min(start + per_chunk, steps))
            ]


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
