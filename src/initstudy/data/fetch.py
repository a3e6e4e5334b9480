"""Obtain the four MNIST IDX files: keep what is verified, try each source in order for the rest.

One download at a time per data folder: :func:`fetch_mnist` holds an OS file lock
(``<data root>/.initstudy-download.lock``) while it works, so a second download stops at once with one line
naming the first (two writers would clear each other's staging folder and race on the renames).
Each source gets its own deadline and the same size caps; its failure, whatever the kind, moves on to the
next source, and the final error names every source with its reason on one line.
"""

from __future__ import annotations

import http.client
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from initstudy.core.faults import pause_point
from initstudy.core.locking import exclusive
from initstudy.data.bounded import Deadline
from initstudy.data.httpget import reason
from initstudy.data.integrity import (
    VerificationError,
    clear_staging,
    install_atomically,
    sha256_file,
    verify_bytes,
)
from initstudy.data.sources import FetchRequest, Source, SourceError

log = logging.getLogger(__name__)

LOCK_FILENAME = ".initstudy-download.lock"
SOURCE_SEPARATOR = " | "


class DownloadError(RuntimeError):
    """No source could provide every file; the one-line message lists each source with its reason."""


@dataclass
class FetchReport:
    already_present: list[str]
    served_by: dict[str, str]  # file name -> source description
    problems: dict[str, str] = field(default_factory=dict)  # source description -> why it fell short


def lock_path(raw_dir: Path) -> Path:
    """``<data root>/.initstudy-download.lock`` for ``raw_dir`` = ``<data root>/MNIST/raw`` (outside the DVC
    output, and left in place: see :mod:`initstudy.core.locking`)."""
    return raw_dir.parents[1] / LOCK_FILENAME


def verified_files(raw_dir: Path, expected: Mapping[str, str]) -> list[str]:
    """Names of files present in ``raw_dir`` whose SHA-256 matches."""
    return [
        name
        for name, digest in expected.items()
        if (raw_dir / name).is_file() and sha256_file(raw_dir / name) == digest.lower()
    ]


def fetch_mnist(
    raw_dir: Path,
    expected: Mapping[str, str],
    sources: Sequence[Source],
    *,
    max_bytes: Mapping[str, int],
    deadline_s: float,
) -> FetchReport:
    """Make ``raw_dir`` hold every file of ``expected``, verified; raise :class:`DownloadError` otherwise.

    ``max_bytes`` caps each file's uncompressed size; ``deadline_s`` bounds each source's whole attempt.
    A present file with a wrong hash (corrupted on disk, truncated) is removed first, then fetched again:
    nothing unverified stays in ``raw_dir``, even when every source fails. Raises
    :class:`initstudy.core.locking.LockHeld` if another download into the same data folder is running.
    """
    with exclusive(lock_path(raw_dir), f"the MNIST download into {raw_dir.parents[1]}"):
        clear_staging(raw_dir)
        present = _keep_verified(raw_dir, expected)
        missing = [name for name in expected if name not in present]
        report = FetchReport(already_present=present, served_by={})
        tried: list[str] = []  # "source: why", in order (two sources may describe themselves alike)
        for source in sources:
            if not missing:
                break
            request = FetchRequest(tuple(missing), max_bytes, Deadline(deadline_s))
            payloads, problem = _ask(source, request)
            problems = [problem] if problem else []
            for name in [name for name in missing if name in payloads]:
                try:
                    _check(name, payloads[name], expected[name], max_bytes[name], source.describe())
                except VerificationError as error:
                    problems.append(str(error))
                    log.error("%s", error)
                    continue
                pause_point("download")
                install_atomically(payloads[name], raw_dir / name)
                missing.remove(name)
                report.served_by[name] = source.describe()
                log.info("%s: served by %s, sha256 verified", name, source.describe())
            if missing and not problems:
                problems.append(f"did not provide {', '.join(missing)}")
            if problems:
                report.problems[source.describe()] = _one_line("; ".join(problems))
                tried.append(f"{source.describe()}: {report.problems[source.describe()]}")
        clear_staging(raw_dir)
        if missing:
            raise DownloadError(
                f"could not obtain verified {', '.join(missing)}; "
                f"sources tried: {SOURCE_SEPARATOR.join(tried) or 'none configured'}"
            )
        return report


def _keep_verified(raw_dir: Path, expected: Mapping[str, str]) -> list[str]:
    """Verified files present; any other file of ``expected`` is removed (it will be fetched again)."""
    present = verified_files(raw_dir, expected)
    for name in expected:
        if name in present:
            log.info("%s: present and verified", name)
        elif (raw_dir / name).exists():
            log.warning("%s: present but fails verification; removed and fetched again", name)
            (raw_dir / name).unlink()
    return present


def _ask(source: Source, request: FetchRequest) -> tuple[dict[str, bytes], str | None]:
    """What ``source`` served and, if it fell short, why: no failure of one source stops the failover."""
    try:
        return source.fetch(request), None
    except SourceError as error:
        problem = str(error)
        served = error.served
    except (OSError, http.client.HTTPException) as error:
        problem, served = reason(error), {}
    except (VerificationError, ValueError, EOFError, pickle.UnpicklingError) as error:
        problem, served = str(error), {}
    log.warning("source %s failed: %s", source.describe(), problem)
    return served, problem


def _check(name: str, data: bytes, digest: str, cap: int, source: str) -> None:
    if len(data) > cap:
        raise VerificationError(
            f"{name} from {source} is {len(data):,} bytes, more than the {cap:,} expected"
        )
    verify_bytes(name, data, digest, source)


def _one_line(text: str) -> str:
    return " ".join(text.split())
