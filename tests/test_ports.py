"""`make ui` and `make server` do not share a port by default, and a taken port stops either with one line
naming it and exit status 1, before anything starts (scripts/port-free.sh)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def make(*args: str) -> subprocess.CompletedProcess:
    # -o install: the recipe alone, without (re)installing the environment.
    return subprocess.run(["make", "-s", "-C", str(REPO), "-o", "install", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_ui_and_server_default_to_different_ports():
    ui = re.search(r"--port (\d+)", make("-n", "ui").stdout).group(1)
    server = re.search(r"MLFLOW_PORT=(\d+)", make("-n", "server").stdout).group(1)
    assert ui != server
    assert "--port 5123" in make("-n", "ui", "UI_PORT=5123").stdout
    assert "MLFLOW_PORT=5124" in make("-n", "server", "SERVER_PORT=5124").stdout


def test_make_ui_on_a_taken_port_exits_non_zero_with_one_line(taken_port: int):
    result = make("ui", f"UI_PORT={taken_port}")
    assert result.returncode != 0
    # make's own "make: ***" line ("make[1]: ***" when make runs under make, as in make test) is not ours
    ours = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?:", line)]
    assert len(ours) == 1 and f"port {taken_port}" in ours[0] and "UI_PORT" in ours[0], result.stderr


def test_the_server_on_a_taken_port_exits_1_with_one_line_and_creates_nothing(
    taken_port: int, tmp_path: Path
):
    folder = tmp_path / "server"
    env = {**os.environ, "MLFLOW_PORT": str(taken_port)}
    result = subprocess.run([str(REPO / "scripts/mlflow-server.sh"), "start", str(folder)], capture_output=True,
                            text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"port {taken_port}" in result.stderr, result.stderr
    assert not folder.exists()


@pytest.mark.parametrize("bad", ["abc", "0", "70000"])
def test_a_port_that_is_not_a_number_is_refused(bad: str):
    result = subprocess.run(
        [str(REPO / "scripts/port-free.sh"), bad, "make ui"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and bad in result.stderr
