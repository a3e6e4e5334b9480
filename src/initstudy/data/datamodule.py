"""MNIST as device-resident tensors, served in seeded, index-sliced mini-batches.

The whole dataset is parsed once by torchvision and kept on the training device as the files' bytes (70,000 x
784 uint8, 55 MB; float32 would be 220 MB); what is read of it (a mini-batch, an evaluation slice) is scaled
to float32 in [0, 1] when read (:class:`ScaledPixels`), bit for bit the values of scaling the whole set.
Each epoch draws a permutation from a generator seeded by (seed, epoch), so batch order depends on nothing
but the config, and gathers mini-batches by index: no per-sample Python, no PIL, no DataLoader workers.
Mini-batches are grouped into *chunks* that the LightningModule consumes with manual optimization, so
Lightning's per-batch hooks run once per chunk instead of once per optimizer step; a chunk holds each step's
indices, one row per network trained at once, and the module gathers the images when the step runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.datasets import MNIST

NUM_PIXELS = 28 * 28


@dataclass(frozen=True)
class Split:
    name: str
    images: ScaledPixels
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


class ScaledPixels:
    """A split's images as uint8 pixels, read as float32 in [0, 1]: ``images[index]`` (any index a tensor
    takes) is ``pixels[index] / 255``. Scaling is elementwise and each of the 256 values scales to the same
    float whichever kernel path (vector or scalar tail) handles it, so a batch read here equals the same rows
    of the whole set scaled at once (tests/test_lightning.py), at a quarter of the memory."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels

    def __getitem__(self, index: object) -> torch.Tensor:
        return scale(self.pixels[index])  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive slices of ``size`` images, each scaled when reached."""
        return (scale(part) for part in self.pixels.split(size))


def scale(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return pixels.to(torch.float32).div_(255.0)


def read_mnist(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse the IDX files with torchvision: (N x 784 uint8 pixels, N int64 labels)."""
    dataset = MNIST(root=str(root), train=train, download=False)
    return dataset.data.reshape(len(dataset.data), NUM_PIXELS), dataset.targets.to(torch.int64)


def load_mnist(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse the IDX files with torchvision and return (N x 784 float32 in [0, 1], N int64 labels)."""
    pixels, labels = read_mnist(root, train)
    return scale(pixels), labels


class ChunkedBatches:
    """One seed's epoch of mini-batches (as indices), grouped ``steps_per_chunk`` at a time; the last mini-batch
    may be short."""

    def __init__(
        self, split: Split, batch_size: int, steps_per_chunk: int, seed: int, epoch: Callable[[], int]
    ) -> None:
        self.split, self.batch_size, self.steps_per_chunk, self.seed = (
            split,
            batch_size,
            steps_per_chunk,
            seed,
        )
        self.epoch = epoch

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.steps_per_epoch / self.steps_per_chunk)

    def batch_indices(self) -> tuple[torch.Tensor, ...]:
        """The current epoch's mini-batches as index tensors on the device."""
        # The order depends on (seed, epoch) alone, not on how much global RNG earlier code consumed.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        order = torch.randperm(len(self.split), generator=generator).to(self.split.labels.device)
        return order.split(self.batch_size)


class StackedBatches:
    """An epoch of every member's mini-batches, ``steps_per_chunk`` steps at a time (one Lightning batch per
    chunk): each step's index tensors of the members stacked to [M, B]. Member m's order is its own
    :class:`ChunkedBatches` (seeded by (seed_m, epoch)), whatever else trains beside it; the module gathers
    ``images[index]`` when the step runs (a chunk of gathered images would hold 32 steps x M members of them,
    128 MB for 20 members, twice while Lightning fetches the next chunk ahead). The members share the data, so
    the batch sizes, the short last batch included, are the same for all of them."""

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


class EvaluationBatches:
    """A whole split in consecutive slices (a plain iterable: Lightning would read a list as many loaders)."""

    def __init__(self, split: Split, batch_size: int) -> None:
        self.split, self.batch_size = split, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return zip(
            self.split.images.split(self.batch_size), self.split.labels.split(self.batch_size), strict=True
        )


class MNISTDataModule(pl.LightningDataModule):
    """Training split plus one evaluation split, and the test set.

    The evaluation split is the validation split (the last ``val_size`` images of the 60,000 training images)
    when ``val_size`` > 0, else the test set (the seed notebook's protocol). ``train_size`` takes the first
    images of what is left, so every training size meets the same validation images.

    The training loader serves the mini-batches of every network the module trains at once, each in its own
    seeded order: ``seeds`` (one per network; default ``[seed]``, a single run).

    Built by ``hydra.utils.instantiate(cfg.data, root=..., seed=..., seeds=..., device=...)``
    (conf/data/mnist.yaml)."""

    def __init__(
        self,
        root: str | Path,
        batch_size: int,
        seed: int,
        train_size: int | None = None,
        val_size: int = 0,
        eval_batch_size: int = 10_000,
        steps_per_chunk: int = 32,
        device: str | torch.device = "cpu",
        seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.root = Path(root)
        self.batch_size, self.seed = batch_size, seed
        self.seeds = [seed] if seeds is None else list(seeds)
        self.train_size, self.val_size = train_size, val_size
        self.eval_batch_size, self.steps_per_chunk = eval_batch_size, steps_per_chunk
        self.train: Split | None = None
        self.eval: Split | None = None
        self.test: Split | None = None
        self._train_batches: StackedBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else self.device
        train_x, train_y = read_mnist(self.root, train=True)
        test_x, test_y = read_mnist(self.root, train=False)
        n_pool = len(train_y) - self.val_size  # the images not held out
        n_train = n_pool if self.train_size is None else self.train_size
        self.test = Split("test", ScaledPixels(test_x.to(device)), test_y.to(device))
        # Copies, so that the full 60,000-image storage is released.
        self.train = Split(
            "train",
            ScaledPixels(train_x[:n_train].clone().to(device)),
            train_y[:n_train].clone().to(device),
        )
        if self.val_size:
            held_out = slice(n_pool, None)
            self.eval = Split(
                "val",
                ScaledPixels(train_x[held_out].clone().to(device)),
                train_y[held_out].clone().to(device),
            )
        else:
            self.eval = self.test

    @property
    def steps_per_epoch(self) -> int:
        assert self.train is not None, "call setup() first"
        return math.ceil(len(self.train) / self.batch_size)

    def train_dataloader(self) -> StackedBatches:
        assert self.train is not None
        if self._train_batches is None:
            epoch = lambda: self.trainer.current_epoch  # noqa: E731
            orders = [ChunkedBatches(self.train, self.batch_size, self.steps_per_chunk, seed, epoch)
                      for seed in self.seeds]  # fmt: skip
            self._train_batches = StackedBatches(orders)
        return self._train_batches

    def val_dataloader(self) -> EvaluationBatches:
        assert self.eval is not None
        return EvaluationBatches(self.eval, self.eval_batch_size)

    def test_dataloader(self) -> EvaluationBatches:
        """The test split for ``trainer.test``: the final evaluation, also when ``eval`` is a validation split."""
        assert self.test is not None
        return EvaluationBatches(self.test, self.eval_batch_size)
