"""Tiny synthetic MNIST: learnable digits in the four IDX files, for tests and benchmarks without the real data.

In the package (not in the test suite) so that the benchmark and the tests draw the same data from one place,
and a benchmark never imports the test suite's fixtures.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initstudy.data.idx import to_idx_bytes


def synthetic_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digits drawn as a bright 6x6 square whose position encodes the class, plus noise: learnable in 1 epoch."""
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + row * 12 : 10 + row * 12, 2 + col * 5 : 8 + col * 5] = 255
    return images, labels


@dataclass
class SyntheticMNIST:
    """The four files' uncompressed IDX bytes, keyed by torchvision's file names."""

    files: dict[str, bytes]

    @property
    def sha256(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}

    def write(self, folder: Path, compress: bool = False) -> Path:
        """The files in ``folder`` (as ``.gz`` when ``compress``, the form mirrors serve)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        return folder


def make_synthetic(n_train: int = 600, n_test: int = 200, seed: int = 0) -> SyntheticMNIST:
    """``n_train`` training and ``n_test`` test images, the same bytes for the same arguments."""
    rng = np.random.default_rng(seed)
    train_x, train_y = synthetic_images(n_train, rng)
    test_x, test_y = synthetic_images(n_test, rng)
    return SyntheticMNIST(
        {
            "train-images-idx3-ubyte": to_idx_bytes(train_x),
            "train-labels-idx1-ubyte": to_idx_bytes(train_y),
            "t10k-images-idx3-ubyte": to_idx_bytes(test_x),
            "t10k-labels-idx1-ubyte": to_idx_bytes(test_y),
        }
    )
