"""Whether the process behind a RUNNING MLflow run still exists: the tags each run carries, the decision, and a
heartbeat.

Why: a run is RUNNING in MLflow until its process says otherwise, and a process killed with SIGKILL, by the OOM
killer or by a lost node says nothing. Every run the project creates (a sweep's parent, a training child, an
imported run) records the process that owns it: host, pid and a token that tells this process from a later
one with the same pid (the boot id and the process's start time, from /proc). A run owned by a process on this
host that no longer exists is orphaned. A run owned by a process on another host (a SLURM node) cannot be
checked that way: its owner refreshes a heartbeat tag every :data:`HEARTBEAT_S` seconds, and a heartbeat older
than :func:`stale_after_s` means the owner is gone. Runs without these tags (made before they existed) are
left as they are: nothing says whose they are. initstudy.tracking.store acts on the decision.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

HOST_TAG = "initstudy.host"
PID_TAG = "initstudy.pid"
PROCESS_TAG = (
    "initstudy.process"  # "<boot id>/<start time in clock ticks>": this pid's process, not a later one
)
HEARTBEAT_TAG = "initstudy.heartbeat"  # unix seconds of the owner's last sign of life
HEARTBEAT_S = 60.0
STALE_ENV = "INITSTUDY_HEARTBEAT_STALE_S"
STALE_DEFAULT_S = 900.0  # 15 missed beats: a loaded node or a long pause of the store is not a death


def stale_after_s() -> float:
    """$INITSTUDY_HEARTBEAT_STALE_S, else 15 minutes: how old a heartbeat may be before its owner counts as gone."""
    value = os.environ.get(STALE_ENV)
    try:
        return float(value) if value else STALE_DEFAULT_S
    except ValueError:
        return STALE_DEFAULT_S


def process_token(pid: int) -> str | None:
    """The boot id and the start time of process ``pid`` (Linux /proc), or None if there is no such process
    (a zombie, i.e. ended but not yet reaped, counts as none) or no /proc to ask."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    state, start_ticks = fields[0], fields[19]
    return None if state in ("Z", "X") else f"{boot_id}/{start_ticks}"


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that name this process (or ``pid``) as a run's owner, with a fresh heartbeat."""
    pid = os.getpid() if pid is None else pid
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PROCESS_TAG: process_token(pid) or "",
        HEARTBEAT_TAG: str(int(time.time())),
    }


def owner_alive(tags: Mapping[str, str], now: float | None = None) -> bool | None:
    """True / False: the run's owner exists / is gone; None: nothing says (no owner tags)."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid or not pid.isdigit():
        return None
    if host == socket.gethostname():
        if not os.path.exists("/proc/self/stat"):
            return _exists(int(pid))
        token = process_token(int(pid))
        recorded = tags.get(PROCESS_TAG)
        return token is not None and (not recorded or token == recorded)
    beat = tags.get(HEARTBEAT_TAG, "")
    if not beat.isdigit():
        return None
    return (time.time() if now is None else now) - int(beat) <= stale_after_s()


def _exists(pid: int) -> bool:
    """Without /proc: whether any process has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """A daemon thread that calls ``beat`` every ``interval_s`` seconds until :meth:`stop`: the owner of a
    RUNNING run shows it is alive (see :func:`owner_alive`). A failing beat is skipped, never fatal."""

    def __init__(self, beat: Callable[[], None], interval_s: float = HEARTBEAT_S) -> None:
        self._stop = threading.Event()
        self._beat, self._interval_s = beat, interval_s
        self._thread = threading.Thread(target=self._run, name="mlflow-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat()
            except Exception:  # the store busy or gone for a moment: the next beat tries again
                continue

    def stop(self) -> None:
        self._stop.set()
