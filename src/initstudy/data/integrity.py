"""Hash checks and atomic installation of data files.

Every file under the data folder is either absent or verified: bytes are hashed in memory, written to a
staging folder beside the destination (same filesystem), flushed, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

STAGING_DIRNAME = ".partial"


class VerificationError(ValueError):
    """A file's SHA-256 differs from the canonical value."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_bytes(name: str, data: bytes, expected: str, source: str) -> None:
    """Raise a one-line :class:`VerificationError` naming file, hashes and source on mismatch."""
    actual = sha256_bytes(data)
    if actual != expected.lower():
        raise VerificationError(
            f"{name} from {source} failed verification: expected sha256 {expected}, got {actual}"
        )


def staging_dir(raw_dir: Path) -> Path:
    """Staging folder for partial writes: ``<root>/../.partial`` for ``raw_dir`` = ``<root>/MNIST/raw``.

    A sibling of the data root (same filesystem, so the final rename is atomic), never inside it: nothing
    under the data root is ever unverified.
    """
    return raw_dir.parents[2] / STAGING_DIRNAME


def install_atomically(data: bytes, destination: Path) -> None:
    """Write ``data`` to ``destination`` so that readers see either nothing or the complete file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(destination.parent)
    staging.mkdir(parents=True, exist_ok=True)
    temporary = staging / f"{destination.name}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def clear_staging(raw_dir: Path) -> None:
    """Remove leftovers of an interrupted earlier attempt."""
    shutil.rmtree(staging_dir(raw_dir), ignore_errors=True)
