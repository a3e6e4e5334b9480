"""One writer at a time for a folder: an OS file lock (``fcntl.flock``) that names its holder.

Usage::

    with exclusive(data_root / ".initstudy-download.lock", "the MNIST download into data/raw"):
        ...  # only one process at a time gets here for this lock file

Why ``flock`` on a lock file: the kernel releases it when the holder's process ends in any way (exit, crash,
SIGKILL), so a dead holder never leaves a stale lock behind, and there is no PID file to clean up. The lock
file itself stays in place (deleting it while another process waits on it would let two writers in); while
held it holds one JSON line (pid, command, host, start time) so that a second writer can say who is in
the way. The descriptor is opened close-on-exec, so subprocesses (``pip download``) never inherit the lock.
Caveat: ``flock`` is per host on some network filesystems; the study's data folder is local.

Why not a locking library: filelock's kernel lock (``UnixFileLock``) records no holder (its owner records
belong to its marker-file "soft" locks, which a killed holder leaves behind to be judged stale), and
zc.lockfile (DVC's) cannot wait, its refusal does not name the holder, and its pid line stays after
release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_HOLDER_BYTES = 4096


class LockHeld(RuntimeError):
    """Another process holds the lock; the one-line message names it (pid, command, host, since when)."""

    def __init__(self, message: str, holder: dict[str, object]) -> None:
        super().__init__(message)
        self.holder = holder


def holder_info() -> dict[str, object]:
    """What this process writes into a lock file it holds."""
    return {
        "pid": os.getpid(),
        "command": " ".join(shlex.join(sys.orig_argv).split())[:200],
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def read_holder(path: Path) -> dict[str, object]:
    """The holder recorded in ``path``; empty when unreadable (e.g. the holder has not written it yet)."""
    try:
        with open(path, "rb") as handle:
            holder = json.loads(handle.read(_MAX_HOLDER_BYTES) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, object]) -> str:
    """``pid N (command) on host since time``, on one line whatever the record holds."""
    if not holder.get("pid"):
        return "an unknown process (it may have just started)"
    text = (
        f"pid {holder.get('pid')} ({holder.get('command', '?')}) "
        f"on {holder.get('host', '?')} since {holder.get('since', '?')}"
    )
    return " ".join(text.split())[:400]


@contextlib.contextmanager
def exclusive(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of the ``with`` block.

    ``what`` names the protected work in messages, e.g. "the MNIST download into data/raw". With
    ``wait=False`` a held lock raises :class:`LockHeld` at once; with ``wait=True`` this blocks until the
    holder releases it or dies. The lock file is created with ordinary permissions (0o666 & ~umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        _acquire(descriptor, path, what, wait)
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(holder_info()).encode() + b"\n", 0)
            yield
        finally:
            os.ftruncate(descriptor, 0)  # the next reader should not take our record for a live holder
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _acquire(descriptor: int, path: Path, what: str, wait: bool) -> None:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = read_holder(path)
    if not wait:
        raise LockHeld(
            f"{what} is already in progress by {describe_holder(holder)}; "
            f"wait for it to finish or stop it (lock file {path})",
            holder,
        )
    log.info("waiting for %s to finish (%s)", describe_holder(holder), path)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
