"""Obtain the four MNIST IDX files: keep what is verified, try each source in order for the rest."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from initstudy.data.integrity import (
    VerificationError,
    clear_staging,
    install_atomically,
    sha256_file,
    verify_bytes,
)
from initstudy.data.sources import SourceError

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """No source could provide every file; the message lists each source with its reason."""


@dataclass
class FetchReport:
    already_present: list[str]
    served_by: dict[str, str]  # file name -> source description


def verified_files(raw_dir: Path, expected: Mapping[str, str]) -> list[str]:
    """Names of files present in ``raw_dir`` whose SHA-256 matches."""
    return [
        name
        for name, digest in expected.items()
        if (raw_dir / name).is_file() and sha256_file(raw_dir / name) == digest.lower()
    ]


def fetch_mnist(raw_dir: Path, expected: Mapping[str, str], sources: Sequence) -> FetchReport:
    """Make ``raw_dir`` hold every file of ``expected``, verified; raise :class:`DownloadError` otherwise.

    A present file with a wrong hash (corrupted on disk, truncated) is removed first, then fetched again:
    nothing unverified stays in ``raw_dir``, even when every source fails.
    """
    clear_staging(raw_dir)
    present = verified_files(raw_dir, expected)
    missing = [name for name in expected if name not in present]
    for name in missing:
        if (raw_dir / name).exists():
            log.warning("%s: present but fails verification; removed and fetched again", name)
            (raw_dir / name).unlink()
    report = FetchReport(already_present=present, served_by={})
    for name in present:
        log.info("%s: present and verified", name)
    failures: list[str] = []
    for source in sources:
        if not missing:
            break
        try:
            payloads = source.fetch(missing)
        except (SourceError, VerificationError, OSError, ValueError, EOFError) as error:
            failures.append(f"{source.describe()}: {error}")
            log.warning("source %s failed: %s", source.describe(), error)
            continue
        for name in list(missing):
            if name not in payloads:
                continue
            try:
                verify_bytes(name, payloads[name], expected[name], source.describe())
            except VerificationError as error:
                failures.append(str(error))
                log.error("%s", error)
                continue
            install_atomically(payloads[name], raw_dir / name)
            missing.remove(name)
            report.served_by[name] = source.describe()
            log.info("%s: served by %s, sha256 verified", name, source.describe())
        if missing and not any(name in payloads for name in missing):
            failures.append(f"{source.describe()}: did not provide {', '.join(missing)}")
    clear_staging(raw_dir)
    if missing:
        reasons = "\n".join(f"  - {reason}" for reason in failures) or "  - no source configured"
        raise DownloadError(f"could not obtain verified {', '.join(missing)}; sources tried:\n{reasons}")
    return report
