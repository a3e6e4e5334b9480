"""Stop signals and orphaned runs, with real processes and real signals: SIGTERM, SIGINT and SIGHUP end every
entry point with status 128 + the signal, the runs they interrupt and the sweep's parent KILLED in MLflow, every
complete run untouched (initstudy.core.signals); a RUNNING run whose process is gone is marked KILLED at the
next start (initstudy.tracking.liveness). Each signal is sent once the process says it reached a named pause
point (initstudy.core.faults): inside the fit, Lightning's own signal handling in place."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SyntheticMNIST, copy_study, dvc, edit_params, make_study_repo, python_module, run
from initstudy.tracking import liveness, store

# The module's tests share the trained study, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("signals")

SWEEP = ["--multirun", "init=he_uniform", "seed=0,1"]
RUNS = ("he_uniform/seed_0", "he_uniform/seed_1")


def start(cmd: list[str], cwd: Path, pause_at: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", INITSTUDY_PAUSE_AT=pause_at
    )
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def stop_when_paused(process: subprocess.Popen, point: str, signum: int, pauses: int = 1,
                     target: Callable[[], int] | None = None) -> str:  # fmt: skip
    """Wait until ``pauses`` processes said they paused at ``point``, send ``signum`` to ``target()`` (the
    process itself by default: `kill PID`), wait for the end; its stderr."""
    deadline = time.monotonic() + 300
    seen: list[str] = []
    while time.monotonic() < deadline and sum(f"paused at {point}" in line for line in seen) < pauses:
        line = process.stderr.readline()
        seen.append(line)
        if not line and process.poll() is not None:
            pytest.fail(f"ended before pausing at {point}: {''.join(seen)[-3000:]}")
    if sum(f"paused at {point}" in line for line in seen) < pauses:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"never paused at {point}: {''.join(seen)[-3000:]}")
    os.kill(target() if target else process.pid, signum)
    try:
        _, rest = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {signal.Signals(signum).name}: {''.join(seen)[-3000:]}")
    return "".join(seen) + rest


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.log"
            and not any(part.startswith(".report-staging-") for part in p.parts)}  # fmt: skip


def mlflow_runs(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def statuses(repo: Path) -> dict[str, list[str]]:
    """Run name -> the statuses of its runs, sorted (parents named ``sweep ...``)."""
    out: dict[str, list[str]] = {}
    for found in mlflow_runs(repo):
        out.setdefault(found.info.run_name, []).append(found.info.status)
    return {name: sorted(values) for name, values in out.items()}


def assert_stopped(output: str, process: subprocess.Popen, signum: int) -> None:
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, output[-3000:]
    assert f"stopped by {name}; exit status {128 + signum}" in output, output[-3000:]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A repo whose two-run sweep (1 epoch) is finished, logged and reported; each test works on a copy."""
    repo = make_study_repo(tmp_path_factory.mktemp("signals"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", *SWEEP), repo)
    return repo


@pytest.fixture
def repo(finished: Path, tmp_path: Path) -> Path:
    return copy_study(finished, tmp_path)


def replacing_sweep(repo: Path) -> dict[str, dict[str, str]]:
    """A new config for the finished sweep (both runs to be replaced); the complete runs' files before."""
    edit_params(repo, trainer__max_epochs=2)
    return {name: digest(repo / "runs" / name) for name in RUNS}


def assert_sweep_killed(repo: Path, before: dict[str, dict[str, str]], stopped: int) -> None:
    """The complete runs byte for byte; the first sweep's parent and children FINISHED, the stopped sweep's
    parent and its ``stopped`` in-flight children KILLED, nothing RUNNING."""
    for name in RUNS:
        assert digest(repo / "runs" / name) == before[name], name
    found = statuses(repo)
    assert not [name for name, values in found.items() if "RUNNING" in values], found
    parents = sorted(
        status for name, values in found.items() if name.startswith("sweep ") for status in values
    )
    assert parents == ["FINISHED", "KILLED"], found
    killed = sum(values.count("KILLED") for name, values in found.items() if not name.startswith("sweep "))
    assert killed == stopped, found
    assert all(values.count("FINISHED") == 1 for name, values in found.items() if name in RUNS), found


# ---- the training entry point, every launcher --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_sweep_exits_128_plus_the_signal_and_ends_killed(repo: Path, signum: int):
    before = replacing_sweep(repo)
    process = start(python_module("initstudy.train", *SWEEP), repo, pause_at="fitting")
    output = stop_when_paused(process, "fitting", signum)
    assert_stopped(output, process, signum)
    assert_sweep_killed(repo, before, stopped=1)
    # The same command again trains both runs: nothing of the stopped attempt counts as done.
    run(python_module("initstudy.train", *SWEEP), repo)
    assert all(statuses(repo)[name].count("FINISHED") == 2 for name in RUNS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "pauses"),
    [
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2),
        (["hydra/launcher=stacked"], 1),  # one group of two members, in the launching process
        (["hydra/launcher=stacked", "hydra.launcher.n_jobs=2", "hydra.launcher.max_models=1"], 2),
    ],
    ids=["joblib", "stacked", "stacked-workers"],
)
def test_sigterm_to_the_launcher_ends_its_in_flight_runs_killed(repo: Path, launcher: list[str], pauses: int):
    """`kill PID` of the launching process while its jobs train (in worker processes, or as one stacked
    group): exit 143, every in-flight run and the parent KILLED, the complete runs untouched."""
    before = replacing_sweep(repo)
    process = start(python_module("initstudy.train", *SWEEP, *launcher), repo, pause_at="fitting")
    output = stop_when_paused(process, "fitting", signal.SIGTERM, pauses=pauses)
    assert_stopped(output, process, signal.SIGTERM)
    assert_sweep_killed(repo, before, stopped=2)


@pytest.mark.slow
def test_sigterm_to_the_joblib_workers_alone_ends_the_sweep_killed(repo: Path):
    """`kill PID` of joblib's worker processes, not of the launcher (a scheduler or an operator stopping the
    processes that train): their runs KILLED, and the sweep, which stop signals ended rather than a failing
    run, ends non-zero with its parent KILLED; the complete runs untouched."""
    import psutil

    def signal_the_workers() -> int:
        workers = [p.pid for p in psutil.Process(process.pid).children(recursive=True)
                   if "popen_loky_posix" in " ".join(p.cmdline())]  # fmt: skip
        assert len(workers) == 2, [" ".join(p.cmdline()) for p in psutil.Process(process.pid).children(True)]
        os.kill(workers[0], signal.SIGTERM)
        return workers[1]

    before = replacing_sweep(repo)
    process = start(python_module("initstudy.train", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
                    repo, pause_at="fitting")  # fmt: skip
    output = stop_when_paused(process, "fitting", signal.SIGTERM, pauses=2, target=signal_the_workers)
    assert process.returncode != 0, output[-3000:]
    assert_sweep_killed(repo, before, stopped=2)


@pytest.mark.slow
def test_a_stopped_single_run_exits_143_and_its_run_is_killed(repo: Path):
    before = digest(repo / "runs" / RUNS[0])
    edit_params(repo, trainer__max_epochs=2)  # the study's new config: its run may replace the finished one
    process = start(python_module("initstudy.train", "init=he_uniform", "seed=0"), repo, pause_at="fitting")
    output = stop_when_paused(process, "fitting", signal.SIGTERM)
    assert_stopped(output, process, signal.SIGTERM)
    assert digest(repo / "runs" / RUNS[0]) == before
    assert statuses(repo)[RUNS[0]] == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_dvc_never_records_a_stopped_training_stage(repo: Path):
    """SIGTERM to the training process under `dvc repro train`: DVC fails the stage and dvc.lock stays."""
    import psutil

    run(dvc("commit", "-f", "download", "train"), repo)  # the data and the finished sweep: dvc.lock
    lock = (repo / "dvc.lock").read_text()
    before = replacing_sweep(repo)
    process = start(dvc("repro", "train"), repo, pause_at="fitting")
    # The training interpreter itself (`python -m initstudy.train`), not the `$SHELL -c` DVC may start it under.
    output = stop_when_paused(process, "fitting", signal.SIGTERM, target=lambda: next(
        p.pid for p in psutil.Process(process.pid).children(recursive=True)
        if p.cmdline()[1:3] == ["-m", "initstudy.train"]))  # fmt: skip
    assert process.returncode != 0, output[-3000:]
    assert (repo / "dvc.lock").read_text() == lock
    assert_sweep_killed(repo, before, stopped=4)  # the stage's sweep: one stacked group of 4 runs


# ---- the other entry points --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stopped_report_exits_143_and_leaves_the_previous_report(repo: Path):
    run(python_module("initstudy.report"), repo)
    before = digest(repo / "reports")
    process = start(python_module("initstudy.report"), repo, pause_at="report-publish")
    output = stop_when_paused(process, "report-publish", signal.SIGTERM)
    assert_stopped(output, process, signal.SIGTERM)
    assert digest(repo / "reports") == before


@pytest.mark.slow
def test_a_stopped_diagnosis_exits_130(repo: Path):
    process = start(python_module("initstudy.diagnose", "--out", "reports/diag", "init=he_uniform", "seed=0"),
                    repo, pause_at="diagnose")  # fmt: skip
    output = stop_when_paused(process, "diagnose", signal.SIGINT)
    assert_stopped(output, process, signal.SIGINT)
    assert not (repo / "reports/diag").exists()


@pytest.mark.slow
def test_a_stopped_download_exits_129_and_leaves_no_unverified_file(study_repo: Path):
    process = start(python_module("initstudy.data"), study_repo, pause_at="download")
    output = stop_when_paused(process, "download", signal.SIGHUP)
    assert_stopped(output, process, signal.SIGHUP)
    raw = study_repo / "data/raw/MNIST/raw"
    assert not raw.exists() or not [p for p in raw.iterdir() if not p.name.startswith(".")], list(
        raw.iterdir()
    )


@pytest.mark.slow
def test_a_stopped_import_exits_143_with_its_parent_and_run_killed(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST
):
    repo = make_study_repo(tmp_path, synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", *SWEEP, "logger=offline"), repo)
    process = start(python_module("initstudy.tracking.importer"), repo, pause_at="import-run")
    output = stop_when_paused(process, "import-run", signal.SIGTERM)
    assert_stopped(output, process, signal.SIGTERM)
    found = statuses(repo)
    assert found["import of runs"] == ["KILLED"] and found[RUNS[0]] == ["KILLED"], found
    run(python_module("initstudy.tracking.importer"), repo)  # the next import completes it
    found = statuses(repo)
    assert found["import of runs"] == ["FINISHED", "KILLED"], found
    assert found[RUNS[0]] == ["FINISHED", "KILLED"] and found[RUNS[1]] == ["FINISHED"], found


# ---- no RUNNING run whose process is gone ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_sigkilled_sweep_is_marked_killed_by_the_next_start(repo: Path):
    """SIGKILL (no cleanup possible): the parent and the in-flight run stay RUNNING until any start of the
    project, here a single run of another folder, finds their process gone."""
    replacing_sweep(repo)
    process = start(python_module("initstudy.train", *SWEEP), repo, pause_at="fitting")
    stop_when_paused(process, "fitting", signal.SIGKILL)
    assert sorted(s for values in statuses(repo).values() for s in values).count("RUNNING") == 2
    run(python_module("initstudy.train", "init=zeros", "seed=7"), repo)
    found = statuses(repo)
    assert not [name for name, values in found.items() if "RUNNING" in values], found
    assert found[RUNS[0]] == ["FINISHED", "KILLED"], found
    assert sorted(s for name, values in found.items() if name.startswith("sweep ") for s in values) == [
        "FINISHED", "KILLED"]  # fmt: skip


def ended_process() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_runs_whose_owner_is_gone_are_marked_killed_at_start(tmp_path: Path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = store.ensure_experiment(uri, "initstudy", tmp_path)
    client = mlflow.MlflowClient(tracking_uri=uri)
    now = int(time.time())
    gone_here = {**liveness.owner_tags(), liveness.PID_TAG: str(ended_process())}
    reused_pid = {
        **liveness.owner_tags(),
        liveness.PROCESS_TAG: "another-boot/1",
    }  # this pid, another process
    elsewhere = {liveness.HOST_TAG: f"not-{socket.gethostname()}", liveness.PID_TAG: "1"}
    cases = {
        "alive here": (liveness.owner_tags(), "RUNNING"),
        "gone here": (gone_here, "KILLED"),
        "pid reused": (reused_pid, "KILLED"),
        "elsewhere, fresh heartbeat": ({**elsewhere, liveness.HEARTBEAT_TAG: str(now - 60)}, "RUNNING"),
        "elsewhere, stale heartbeat": ({**elsewhere, liveness.HEARTBEAT_TAG: str(now - 3600)}, "KILLED"),
        "elsewhere, no heartbeat": (elsewhere, "RUNNING"),
        "no owner recorded": ({}, "RUNNING"),
    }
    ids = {name: client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
           for name, (tags, _) in cases.items()}  # fmt: skip
    finished_gone = client.create_run(experiment_id, run_name="finished", tags=gone_here).info.run_id
    client.set_terminated(finished_gone, "FINISHED")

    store.ensure_experiment(uri, "initstudy", tmp_path)  # any start of training or of the import

    found = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert found == {name: expected for name, (_, expected) in cases.items()}
    assert client.get_run(finished_gone).info.status == "FINISHED"


def test_every_run_records_its_owner_and_a_heartbeat(tmp_path: Path):
    tags = store.run_tags("he_uniform", 0, "runs/he_uniform/seed_0", tmp_path)
    assert tags[liveness.HOST_TAG] == socket.gethostname() and tags[liveness.PID_TAG] == str(os.getpid())
    assert liveness.owner_alive(tags) is True
    assert abs(int(tags[liveness.HEARTBEAT_TAG]) - time.time()) < 600


# ---- the signal handling itself ---------------------------------------------------------------------------

HOLDER = """
import sys, time
from initstudy.core import signals
with signals.stopping_exits("holder"):
    try:
        print("ready", flush=True)
        time.sleep(600)
    finally:
        print("cleanup started", flush=True)
        {cleanup}
        print("cleanup done", flush=True)
"""


def hold(cleanup: str = "pass") -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER.format(cleanup=cleanup)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_runs_the_cleanup_then_exits_128_plus_its_number(signum: int):
    process = hold()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert "cleanup done" in out
    assert err.strip() == f"holder: stopped by {signal.Signals(signum).name}; exit status {128 + signum}"


def test_a_second_signal_does_not_cut_the_cleanup_short():
    process = hold(cleanup="sys.stdin.readline()")  # the cleanup waits for our go
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline().strip() == "cleanup started"
    process.send_signal(signal.SIGINT)  # while cleaning up: noted, not obeyed
    assert "SIGINT received while stopping on SIGTERM" in process.stderr.readline()
    out, err = process.communicate("go\n", timeout=60)
    assert process.returncode == 143 and "cleanup done" in out, err


def test_handlers_are_restored_and_nested_uses_leave_the_outer_in_charge():
    from initstudy.core import signals

    before = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    with pytest.raises(SystemExit) as stopped, signals.stopping_exits("outer"):
        installed = signal.getsignal(signal.SIGTERM)
        assert installed is not before[signal.SIGTERM]
        with pytest.raises(signals.Interrupted), signals.stopping_exits("inner"):  # a job inside its launcher
            assert signal.getsignal(signal.SIGTERM) is installed
            raise signals.Interrupted(signal.SIGTERM)
        raise signals.Interrupted(signal.SIGTERM)
    assert stopped.value.code == 143
    assert {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS} == before


def test_sigusr2_is_left_to_slurm_requeueing():
    from initstudy.core import signals

    previous = signal.getsignal(signal.SIGUSR2)
    with signals.stopping_exits("job"):
        assert signal.getsignal(signal.SIGUSR2) is previous
