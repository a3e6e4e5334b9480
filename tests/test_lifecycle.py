"""The run lifecycle under kills, concurrency and damage: a finished result is replaced only by a finished
result, MLflow ends with exactly one FINISHED run per run folder, and nothing the project did not write is
touched. Kills are SIGKILLs of the whole process group at named pause points (initstudy.core.faults)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SyntheticMNIST, copy_study, edit_params, make_study_repo, python_module, run
from initstudy.runs import rundir
from initstudy.tracking import store

# The module's tests share the finished study, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("lifecycle")

SWEEP = ["--multirun", "init=he_uniform", "seed=0,1"]
RUNS = ("he_uniform/seed_0", "he_uniform/seed_1")


def start(cmd: list[str], cwd: Path, pause_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if pause_at:
        env["INITSTUDY_PAUSE_AT"] = pause_at
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def kill_when_paused(process: subprocess.Popen, point: str, timeout: float = 180) -> None:
    """Wait until the process says it paused at ``point``, then SIGKILL its whole process group."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if f"paused at {point}" in line:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return
        if not line and process.poll() is not None:
            break
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"never paused at {point}: {''.join(seen)[-3000:]}")


def digest(folder: Path) -> dict[str, str]:
    """sha256 of the published files (a killed report's staging folder is not published)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.log"
            and not any(part.startswith(".report-staging-") for part in p.parts)}  # fmt: skip


def mlflow_children(repo: Path) -> dict[str, list]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    out: dict[str, list] = {}
    for found in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" in found.data.tags:
            out.setdefault(found.data.tags.get(store.RUN_DIR_TAG, found.info.run_name), []).append(found)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A repo whose two-run sweep (1 epoch) is finished and logged; each test works on a copy."""
    repo = make_study_repo(tmp_path_factory.mktemp("lifecycle"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", *SWEEP), repo)
    run(python_module("initstudy.report"), repo)
    return repo


@pytest.fixture
def repo(finished: Path, tmp_path: Path) -> Path:
    return copy_study(finished, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["trained", "before-marker", "before-promote", "before-finished"])
def test_kill_during_a_replacement_never_loses_the_finished_run(repo: Path, point: str):
    old = {name: digest(repo / "runs" / name) for name in RUNS}
    edit_params(repo, trainer__max_epochs=2)  # a new config: both runs are to be replaced
    kill_when_paused(start(python_module("initstudy.train", *SWEEP), repo, pause_at=point), point)

    first = repo / "runs" / RUNS[0]
    now = digest(first)
    if point == "before-finished":  # the replacement was already in place: the new complete run
        assert (
            now != old[RUNS[0]] and json.loads((first / "metrics.json").read_text())["epochs_completed"] == 2
        )
    else:  # the old complete run, byte for byte
        assert now == old[RUNS[0]]
    assert digest(repo / "runs" / RUNS[1]) == old[RUNS[1]]  # not started yet

    resumed = run(python_module("initstudy.train", *SWEEP), repo)
    for name in RUNS:
        metrics = json.loads((repo / "runs" / name / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 2, name
    assert not (repo / "runs/.staging").exists(), "staging left behind"
    if point == "before-finished":
        assert "skipped" in resumed.stderr + resumed.stdout

    # MLflow: per run folder, one FINISHED run of the first sweep and one of the second; the killed
    # attempt KILLED (or, killed after promotion, FINISHED by the next start); nothing left RUNNING.
    children = mlflow_children(repo)
    for name in RUNS:
        statuses = sorted(r.info.status for r in children[f"runs/{name}"])
        parents = {
            r.data.tags["mlflow.parentRunId"] for r in children[f"runs/{name}"] if r.info.status == "FINISHED"
        }
        assert "RUNNING" not in statuses, (name, statuses)
        assert statuses.count("FINISHED") == 2 and len(parents) == 2, (name, statuses)
        expected_killed = 1 if (name == RUNS[0] and point != "before-finished") else 0
        assert statuses.count("KILLED") == expected_killed, (name, statuses)


@pytest.mark.slow
def test_kill_during_the_report_leaves_the_previous_report(repo: Path):
    before = digest(repo / "reports")
    edit_params(repo, trainer__max_epochs=2)
    run(python_module("initstudy.train", *SWEEP), repo)
    point = "report-publish"
    kill_when_paused(start(python_module("initstudy.report"), repo, pause_at=point), point)
    assert digest(repo / "reports") == before  # staging is not part of the published files
    run(python_module("initstudy.report"), repo)
    after = digest(repo / "reports")
    assert after != before and not list((repo / "reports").glob(".report-staging-*"))


@pytest.mark.slow
def test_kill_during_mlflow_import_is_completed_by_the_next_import(repo: Path):
    (repo / "mlflow.db").unlink()
    shutil.rmtree(repo / "mlartifacts", ignore_errors=True)
    edit_params(repo, trainer__max_epochs=2)
    run(python_module("initstudy.train", *SWEEP, "logger=offline"), repo)
    kill_when_paused(
        start(python_module("initstudy.tracking.importer"), repo, pause_at="import-run"), "import-run"
    )
    result = run(python_module("initstudy.tracking.importer"), repo)
    assert "imported 2 run(s)" in result.stdout, result.stdout
    children = mlflow_children(repo)
    statuses = sorted(r.info.status for runs in children.values() for r in runs)
    assert statuses == ["FINISHED", "FINISHED", "KILLED"], statuses
    assert "imported 0 run(s)" in run(python_module("initstudy.tracking.importer"), repo).stdout


@pytest.mark.slow
def test_two_writers_on_one_runs_root_cannot_interleave(repo: Path):
    edit_params(repo, trainer__max_epochs=2)
    holder = start(python_module("initstudy.train", *SWEEP), repo, pause_at="trained")
    deadline = time.monotonic() + 180
    while "paused at trained" not in holder.stderr.readline():
        assert time.monotonic() < deadline and holder.poll() is None, "the first sweep never trained"
    try:
        for second in (SWEEP, ["init=he_uniform", "seed=1"]):  # another sweep; a single run on the same root
            result = run(python_module("initstudy.train", *second), repo, check=False)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2 and len(lines) == 1, result.stderr
            assert str(holder.pid) in lines[0], lines[0]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    run(python_module("initstudy.train", *SWEEP), repo)  # the dead holder's lock is gone with it
    assert all(rundir.read_marker(repo / "runs" / name) for name in RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not json", "[1, 2]", "marker without metrics"])
def test_damaged_marker_means_recompute(repo: Path, damage: str):
    folder = repo / "runs" / RUNS[0]
    if damage == "marker without metrics":
        (folder / "metrics.json").unlink()
    else:
        (folder / rundir.MARKER).write_text(damage)
    result = run(python_module("initstudy.train", *SWEEP), repo)
    assert "Traceback" not in result.stderr
    assert "skipped" in result.stdout + result.stderr  # the undamaged run
    assert rundir.read_marker(folder) is not None and (folder / "metrics.json").is_file()


@pytest.mark.slow
def test_results_are_readable_by_group_and_others(repo: Path):
    for path in [
        *(repo / "runs" / RUNS[0]).iterdir(),
        *(repo / "reports").iterdir(),
        repo / "runs/manifest.csv",
    ]:
        if path.is_file():
            assert path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH) == stat.S_IRGRP | stat.S_IROTH, path


# ---- fast checks of the pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["postgresql://user:secret@db.example:5432/mlflow", "https://user:token-secret@tracking.example/"],
)
def test_credentials_are_redacted_everywhere_we_write_a_uri(uri):
    assert "secret" not in store.redact(uri) and "***@" in store.redact(uri)
    params = store.flat_params({"logger": {"tracking_uri": uri}, "seed": 0})
    assert all("secret" not in value for value in params.values())


@pytest.mark.slow
def test_unreachable_server_with_credentials_is_one_line_without_them(repo, monkeypatch, capsys, tmp_path):
    import socket

    from initstudy.train import __main__

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}")
    monkeypatch.chdir(repo)  # a repo with data: the data check comes before the tracking check
    with pytest.raises(SystemExit):
        __main__.main(["init=zeros", "hydra.run.dir=" + str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert "not reachable" in err and "secret" not in err and "***@127.0.0.1" in err, err


def test_transient_database_lock_is_retried_with_backoff(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(store.STORE_BUSY_RETRYING, "sleep", waits.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "logged"

    assert store.retry(flaky) == "logged" and len(calls) == 3 and waits == [0.2, 0.4]


def test_a_store_locked_for_good_fails_after_bounded_waits_with_its_own_error(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(store.STORE_BUSY_RETRYING, "sleep", waits.append)
    calls = []

    def locked():
        calls.append(1)
        raise RuntimeError("(sqlite3.OperationalError) database is busy")

    with pytest.raises(RuntimeError, match="database is busy"):
        store.retry(locked)
    assert len(calls) == 8 and max(waits) == 5.0 and sum(waits) == pytest.approx(16.2)
    calls.clear()
    with pytest.raises(RuntimeError):  # a second call gets its own eight tries
        store.retry(locked)
    assert len(calls) == 8


def test_an_error_other_than_a_busy_store_is_raised_at_once(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(store.STORE_BUSY_RETRYING, "sleep", waits.append)
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    with pytest.raises(ConnectionRefusedError):
        store.retry(refused)
    with pytest.raises(ValueError):
        store.retry(lambda: (_ for _ in ()).throw(ValueError("not transient")))
    assert calls == [1] and waits == []
