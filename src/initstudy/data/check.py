"""Checks of a config against the data it will train on: the MNIST files present with their canonical
hashes, and sizes (split, batch, classes) that fit the data, so a job that cannot run is refused before it
starts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from initstudy.core.errors import ConfigError
from initstudy.data.integrity import sha256_file


def check_data(raw_dir: Path, expected: dict[str, str]) -> None:
    """Every MNIST file present with its canonical hash, or a one-line ConfigError naming the file."""
    for name, digest in expected.items():
        path = raw_dir / name
        if not path.is_file():
            raise ConfigError(
                f"data file {path} is missing; run `dvc repro download` (or python -m initstudy.data)"
            )
        stat = path.stat()
        actual = file_digest(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if actual != digest.lower():
            raise ConfigError(
                f"data file {path} fails verification (expected sha256 {digest}, got {actual}): wrong or "
                f"truncated; run `dvc repro download` to replace it"
            )


@functools.lru_cache(maxsize=64)
def file_digest(path: Path, size: int, mtime_ns: int, inode: int) -> str:
    """A file's sha256, read once per process for as long as its size, time and inode stay the same: every
    job of a sweep is checked as it starts, and hashing the 55 MB of MNIST for each would add up."""
    return sha256_file(path)


def read_labels(path: Path) -> np.ndarray:
    """An IDX label file's labels (the files are small; the header gives the count)."""
    data = path.read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=8)


@dataclass(frozen=True)
class DataFacts:
    """What the sizes of a config are checked against: read once per data folder, not once per job."""

    train_images: int
    classes: int  # the highest label + 1, over both splits


def data_facts(raw_dir: Path) -> DataFacts:
    train_labels = read_labels(raw_dir / "train-labels-idx1-ubyte")
    test_labels = read_labels(raw_dir / "t10k-labels-idx1-ubyte")
    classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    return DataFacts(len(train_labels), classes)


def check_fits_data(cfg: DictConfig, facts: DataFacts) -> None:
    """Values that are valid alone but not for this data: sizes, the split, the class count."""
    available, val_size, size = facts.train_images, cfg.data.val_size, cfg.data.train_size
    if val_size >= available:
        raise ConfigError(
            f"invalid data.val_size={val_size}: of {available} training images it leaves none to train on "
            f"(use at most {available - 1})"
        )
    if size is not None and size > available - val_size:
        raise ConfigError(
            f"invalid data.train_size={size}: the data has {available} training images, {val_size} of them "
            f"held out (data.val_size); use at most {available - val_size}, or null"
        )
    if cfg.model.num_classes < facts.classes:
        raise ConfigError(
            f"invalid model.num_classes={cfg.model.num_classes}: the data's labels need at least {facts.classes}"
        )
