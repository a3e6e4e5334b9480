"""``initstudy.core.locking.exclusive``: one writer at a time, across real processes, released when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from initstudy.core.locking import LockHeld, exclusive, read_holder

HOLD = """
import sys, time
from pathlib import Path
from initstudy.core.locking import exclusive
with exclusive(Path(sys.argv[1]), "the test job", wait=sys.argv[2] == "wait"):
    print("acquired", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(path: Path, wait: bool = False, seconds: float = 60) -> subprocess.Popen:
    """A separate Python process that takes the lock (or waits for it) and then sleeps."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), "wait" if wait else "now", str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_held(process: subprocess.Popen, path: Path, timeout: float = 30) -> None:
    """Until the lock file names ``process`` (it writes its record right after taking the lock)."""
    deadline = time.monotonic() + timeout
    while read_holder(path).get("pid") != process.pid:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return tmp_path / "folder" / ".test.lock"


def test_second_process_is_refused_in_one_line_naming_the_holder(lock: Path):
    holder = hold(lock)
    try:
        wait_until_held(holder, lock)
        second = subprocess.run(
            [sys.executable, "-c", HOLD, str(lock), "now", "0"], capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0 and "acquired" not in second.stdout
        error = second.stderr.strip().splitlines()[-1]
        assert error.startswith("initstudy.core.locking.LockHeld: the test job is already in progress by "), (
            error
        )
        for word in (f"pid {holder.pid}", "-c", os.uname().nodename, str(lock)):
            assert word in error, (word, error)
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_when_the_holder_is_killed(lock: Path):
    holder = hold(lock)
    wait_until_held(holder, lock)
    with pytest.raises(LockHeld, match=f"pid {holder.pid}"), exclusive(lock, "the test job"):
        pass
    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel releases the lock
    holder.wait()
    with exclusive(lock, "the test job"):
        assert read_holder(lock)["pid"] == os.getpid()
    assert read_holder(lock) == {}  # released: no stale record left for the next reader


def test_waiting_writer_gets_the_lock_when_the_holder_ends(lock: Path):
    holder = hold(lock)
    try:
        wait_until_held(holder, lock)
        waiter = hold(lock, wait=True, seconds=0)
        time.sleep(0.5)
        assert waiter.poll() is None, waiter.communicate()  # still waiting, not failed
        holder.kill()
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and out.strip() == "acquired", err
    finally:
        holder.kill()
        holder.wait()


def test_same_process_twice_is_refused_too(lock: Path):
    """flock belongs to an open file, not a process: a re-entrant call is a second writer, and says so."""
    with (
        exclusive(lock, "the outer job"),
        pytest.raises(LockHeld, match=f"pid {os.getpid()}"),
        exclusive(lock, "the inner job"),
    ):
        pass


def test_lock_file_gets_ordinary_permissions(lock: Path):
    previous = os.umask(0o027)
    try:
        with exclusive(lock, "the test job"):
            pass
    finally:
        os.umask(previous)
    assert lock.stat().st_mode & 0o777 == 0o640
