"""A folder of outputs written beside it first and moved in at the end, so that a kill never costs the old ones.

DVC deletes a stage's outputs before running it unless they are marked ``persist: true`` (dvc.yaml); the
diagnose stages' folders are, and this module is what makes that safe. The stage writes every file into a
staging folder beside its output folder (same filesystem, so each move is one rename), and only once all are
written moves them in: a kill before that leaves the previous outputs byte for byte; a kill during the moves
leaves each file whole, old or new, which ``dvc status`` shows as changed, so the next ``dvc repro`` runs the
stage again. Only the file names the stage owns are ever moved or deleted: a file planted in the staging
folder stays there, a file of someone else's in the output folder stays too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection
from pathlib import Path

STAGING_MARK = ".staging-"


def _prefix(out_dir: Path) -> str:
    return f".{out_dir.name}{STAGING_MARK}"


def staging_for(out_dir: Path) -> Path:
    """A new, empty staging folder beside ``out_dir`` (``.<name>.staging-XXXX``)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_prefix(out_dir), dir=out_dir.parent))


def publish(staging: Path, out_dir: Path, owned: Collection[str]) -> list[str]:
    """Move the owned files ``staging`` holds into ``out_dir`` (each replace atomic), delete the owned files
    it does not hold (an earlier run's output this run no longer makes), then drop ``staging``. Returns the
    names published."""
    written = sorted(name for name in owned if (staging / name).is_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in written:
        os.replace(staging / name, out_dir / name)
    for name in sorted(set(owned) - set(written)):
        (out_dir / name).unlink(missing_ok=True)
    discard(staging, owned)
    return written


def discard(staging: Path, owned: Collection[str]) -> None:
    """Remove a staging folder's owned files and the temporaries of :mod:`initstudy.core.atomic`, then the
    folder itself if nothing else is left in it."""
    for name in owned:
        (staging / name).unlink(missing_ok=True)
    for temporary in staging.glob(".*.tmp"):
        temporary.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something we did not write lives there; leave it
        staging.rmdir()


def discard_leftovers(out_dir: Path, owned: Collection[str]) -> None:
    """The staging folders a killed run left beside ``out_dir`` (see :func:`discard`)."""
    for staging in out_dir.parent.glob(f"{_prefix(out_dir)}*"):
        if staging.is_dir() and not staging.is_symlink():
            discard(staging, owned)
