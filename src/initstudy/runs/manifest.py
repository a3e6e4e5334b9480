"""The manifest of a sweep (``manifest.csv``): which run folders belong to the current sweep, written before
the jobs start (or appended to by a tuning sweeper), so that a report never mixes in runs of an older one."""

from __future__ import annotations

import fcntl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pandas as pd

from initstudy.core import atomic
from initstudy.runs.rundir import MANIFEST as MANIFEST_NAME


class ManifestEntry(Protocol):
    """What the manifest records of a job (initstudy.sweep.jobs.Job has it): the run folder lies below the
    sweep, so the manifest needs no knowledge of how a sweep builds its jobs."""

    init: str
    seed: int
    group: str
    run_dir: Path
    config_hash: str
    identity: str
    activation: str
    hidden_sizes: tuple[int, ...]
    overrides: tuple[str, ...]

    @property
    def depth(self) -> int: ...


MANIFEST_COLUMNS = ("init", "seed", "group", "run_dir", "config_hash", "identity", "activation", "depth",
                    "hidden_sizes", "overrides")  # fmt: skip


def manifest_frame(jobs: Sequence[ManifestEntry], sweep_dir: Path) -> pd.DataFrame:
    rows = [
        {
            "init": job.init,
            "seed": job.seed,
            "group": job.group,
            "run_dir": job.run_dir.relative_to(sweep_dir).as_posix(),
            "config_hash": job.config_hash,
            "identity": job.identity,
            "activation": job.activation,
            "depth": job.depth,
            "hidden_sizes": "-".join(map(str, job.hidden_sizes)),
            "overrides": " ".join(job.overrides),
        }
        for job in jobs
    ]
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def write_manifest(jobs: Sequence[ManifestEntry], sweep_dir: Path) -> Path:
    """The manifest of a sweep whose jobs are known (an empty one, header only, for a tuning sweep)."""
    path = sweep_dir / MANIFEST_NAME
    atomic.write_text(path, manifest_frame(jobs, sweep_dir).to_csv(index=False))
    return path


def append_to_manifest(job: ManifestEntry, sweep_dir: Path) -> None:
    """Add a job a tuning sweeper chose, once (a trial may pick a value again): one write in append mode
    under an exclusive lock of the manifest itself, so that parallel job processes add whole lines."""
    frame = manifest_frame([job], sweep_dir)
    with open(sweep_dir / MANIFEST_NAME, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        if frame.run_dir.iloc[0] not in set(pd.read_csv(handle, usecols=["run_dir"]).run_dir):
            handle.write(frame.to_csv(index=False, header=False))
            handle.flush()


def listed_run_dirs(sweep_dir: Path) -> set[str]:
    """The run folders a sweep root's manifest lists (relative to the root); none when there is no readable
    manifest (nothing to protect: the next sweep writes one)."""
    try:
        return set(read_manifest(sweep_dir).run_dir.astype(str))
    except (FileNotFoundError, ValueError, OSError):
        return set()


def read_manifest(sweep_dir: Path) -> pd.DataFrame:
    path = sweep_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage (dvc repro train) first")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable manifest: {' '.join(str(error).split())}") from None
    missing = {"init", "seed", "run_dir"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
    return frame
