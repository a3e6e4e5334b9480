"""What a study that runs for hours must survive: kills, divergence, a dead tracking server, parallel
writers, interrupted downloads. Each test would fail without the mechanism it names."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import SyntheticMNIST, dvc, edit_params, python_module, run


def client_for(repo: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    return client, experiment.experiment_id


def children_by_name(repo: Path) -> dict[str, list]:
    client, experiment_id = client_for(repo)
    out: dict[str, list] = {}
    for run_ in client.search_runs([experiment_id]):
        if "mlflow.parentRunId" in run_.data.tags:
            out.setdefault(run_.info.run_name, []).append(run_)
    return out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def popen(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Like conftest.run, in the background and in its own process group (to be killed as a whole)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(cmd[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


# ---- 1. resume -------------------------------------------------------------------------------------------

SIX = [(init, seed) for init in ("zeros", "he_uniform", "glorot_uniform") for seed in (0, 1)]


@pytest.mark.slow
def test_sweep_killed_during_third_run_resumes_only_the_missing_runs(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    edit_params(repo, trainer__max_epochs=40,
                hydra__sweeper__params={"init": "zeros,he_uniform,glorot_uniform", "seed": "0,1"})  # fmt: skip
    third = repo / "runs/he_uniform/seed_0"
    staging = repo / "runs/.staging/he_uniform/seed_0"  # where the third run trains until it is complete
    process = popen(python_module("initstudy.train", "--multirun"), repo)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the third run is training (its 2nd epoch logged)
        log = staging / "train.log"
        if log.exists() and "epoch 2/" in log.read_text():
            break
        time.sleep(0.02)
    else:
        process.kill()
        pytest.fail("the third run never started training")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    complete = [repo / f"runs/zeros/seed_{s}" for s in (0, 1)]
    assert all((d / ".complete").is_file() for d in complete)
    assert not third.exists()  # the killed attempt never reached its run folder
    assert not (repo / "runs/he_uniform/seed_1").exists()
    leftover = staging / ".metrics.json.k1ll3d.tmp"  # a temporary file of the killed attempt
    leftover.write_text("partial")
    mtimes = {d: (d / "metrics.json").stat().st_mtime_ns for d in complete}

    resumed = run(python_module("initstudy.train", "--multirun"), repo)
    output = resumed.stdout + resumed.stderr
    assert output.count("complete with the same config and code: skipped") == 2
    # The killed process's runs are found orphaned at start (initstudy.tracking.liveness), before any job.
    assert "marked KILLED in MLflow, their process gone: he_uniform/seed_0, sweep 6 runs" in output
    assert {d: (d / "metrics.json").stat().st_mtime_ns for d in complete} == mtimes
    assert not leftover.exists() and not (repo / "runs/.staging").exists()
    for init, seed in SIX:
        assert (repo / f"runs/{init}/seed_{seed}/.complete").is_file()

    # MLflow: one parent, exactly one FINISHED child per (init, seed); the killed attempt is KILLED.
    children = children_by_name(repo)
    assert sorted(children) == sorted(f"{i}/seed_{s}" for i, s in SIX)
    for name, runs in children.items():
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert len(finished) == 1, name
        assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), name
    assert sorted(r.info.status for r in children["he_uniform/seed_0"]) == ["FINISHED", "KILLED"]
    parents = {r.data.tags["mlflow.parentRunId"] for runs in children.values() for r in runs}
    assert len(parents) == 1


@pytest.mark.slow
def test_changed_config_is_recomputed_same_config_is_not(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    args = ["init=zeros", "seed=0"]
    edit_params(repo, trainer__max_epochs=2)
    run(python_module("initstudy.train", *args), repo)
    again = run(python_module("initstudy.train", *args), repo)
    assert "skipped" in again.stdout + again.stderr
    edit_params(repo, trainer__max_epochs=3)  # the study's plan changed: its folder takes the new config
    changed = run(python_module("initstudy.train", *args), repo)
    assert "skipped" not in changed.stdout + changed.stderr
    assert json.loads((repo / "runs/zeros/seed_0/metrics.json").read_text())["epochs_completed"] == 3
    # A try of another config on the command line never replaces it (initstudy.runs.namespace).
    tried = run(python_module("initstudy.train", *args, "trainer.max_epochs=2"), repo, check=False)
    assert tried.returncode == 2 and "runs_try/zeros/seed_0" in tried.stderr, tried.stderr
    assert json.loads((repo / "runs/zeros/seed_0/metrics.json").read_text())["epochs_completed"] == 3


# ---- 2. divergence -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_diverging_run_stops_is_recorded_and_the_sweep_goes_on(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    (repo / "conf/init/exploding.yaml").write_text(
        "_target_: initstudy.nn.initializers.RandomNormal\nname: exploding\nstd: 1.0e+4\n"
    )
    result = run(python_module("initstudy.train", "--multirun", "init=exploding,he_uniform", "seed=0",
                               "optimizer=sgd", "optimizer.lr=10.0", "trainer.max_epochs=5"), repo)  # fmt: skip
    exploded = json.loads((repo / "runs/exploding/seed_0/metrics.json").read_text())
    assert exploded["diverged"] is True
    assert exploded["diverged_at_epoch"] == 1 and exploded["diverged_at_step"] >= 1
    assert exploded["epochs_completed"] == 1  # stopped early, not 5 epochs of NaN
    assert exploded["last_finite_loss"] is None or exploded["last_finite_loss"] > 0
    assert "diverged at step" in result.stdout + result.stderr
    assert (repo / "runs/he_uniform/seed_0/.complete").is_file()  # the sweep went on
    run(python_module("initstudy.report"), repo)
    summary = pd.read_csv(repo / "reports/summary.csv").set_index("init")
    assert summary.loc["exploding"].n_diverged == 1 and summary.loc["he_uniform"].n_diverged == 0
    assert "1 run(s) diverged" in (repo / "reports/report.md").read_text()


# ---- 3. bad data -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_wrong_or_truncated_data_file_is_refused_before_training(synthetic_data_repo: Path, damage: str):
    repo = synthetic_data_repo
    path = repo / "data/raw/MNIST/raw/train-labels-idx1-ubyte"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-7])
    elif damage == "flipped":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        path.unlink()
    result = run(python_module("initstudy.train", "init=zeros"), repo, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "train-labels-idx1-ubyte" in lines[0] and (
        "fails verification" in lines[0] or "missing" in lines[0]
    )
    assert not (repo / "runs").exists() and not (repo / "mlflow.db").exists()


# ---- 4. concurrent logging ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_four_parallel_joblib_jobs_lose_no_run_and_no_metric(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    epochs, every = 3, 5
    run(python_module("initstudy.train", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                      f"trainer.max_epochs={epochs}", f"trainer.log_every_n_steps={every}"), repo)  # fmt: skip
    client, _ = client_for(repo)
    children = children_by_name(repo)
    assert sorted(children) == ["he_uniform/seed_0", "he_uniform/seed_1", "zeros/seed_0", "zeros/seed_1"]
    steps = epochs * -(-500 // 32)  # 16 steps per epoch over the 500 synthetic training images not held out
    expected = {
        "val/acc": epochs + 1,
        "val/loss": epochs + 1,
        "train/loss": epochs,
        "train/loss_step": steps // every,
        # step 0, every epoch end and the early module.val_steps (1, 2, 5, 10, 20; the 48 steps never reach
        # 50 or module.val_every_n_steps = 100)
        "val/acc_step": epochs + 1 + 5,
        "val/loss_step": epochs + 1 + 5,
    }
    total = 0
    for name, (child,) in children.items():
        assert child.info.status == "FINISHED"
        history = pd.read_csv(repo / "runs" / name / "history.csv")
        for metric, count in expected.items():
            logged = client.get_metric_history(child.info.run_id, metric)
            assert len(logged) == count, (name, metric, len(logged))
            from_file = history[history.metric == metric].value.tolist()
            assert sorted(m.value for m in logged) == pytest.approx(sorted(from_file)), (name, metric)
            total += len(logged)
    assert total == 4 * sum(expected.values())


# ---- 5. tracking server down ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dead_tracking_server_fails_fast_offline_runs_import_later(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    dead = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    started = time.monotonic()
    result = run(python_module("initstudy.train", "--multirun"), repo, check=False, env=dead)
    elapsed = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "not reachable" in lines[0], result.stderr
    assert "logger=offline" in lines[0]
    assert elapsed < 30  # interpreter start-up included; the check itself gives up after 3 s
    assert not (repo / "runs").exists()

    run(python_module("initstudy.train", "--multirun", "logger=offline"), repo, env=dead)
    assert len(list((repo / "runs").glob("*/seed_*/.complete"))) == 4
    assert not (repo / "mlflow.db").exists()

    imported = run(python_module("initstudy.tracking.importer"), repo)
    assert "imported 4 run(s)" in imported.stdout
    children = children_by_name(repo)
    assert len(children) == 4
    for name, (child,) in children.items():
        metrics = json.loads((repo / "runs" / name / "metrics.json").read_text())
        assert child.data.metrics["final/test/acc"] == pytest.approx(metrics["test/acc"])
        assert child.info.status == "FINISHED"
        # As a live run: its network as an mlflow.pytorch model, its data with the files' digests, no seed metric.
        assert len(child.outputs.model_outputs) == 1 and "final/seed" not in child.data.metrics
        contexts = {
            tag.value
            for i in child.inputs.dataset_inputs
            for tag in i.tags
            if tag.key == "mlflow.data.context"
        }
        assert contexts == {"training", "test"}
    assert "imported 0 run(s)" in run(python_module("initstudy.tracking.importer"), repo).stdout


# ---- 7. data safety ---------------------------------------------------------------------------------------------------


class StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Sends half of every file, then stalls: a download that will be killed mid-file."""

    sent_half = threading.Event()

    def do_GET(self):
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        StallingHandler.sent_half.set()
        time.sleep(20)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_download_killed_mid_file_leaves_no_unverified_file(
    study_repo: Path, synthetic_mnist: SyntheticMNIST, tmp_path
):
    served = synthetic_mnist.write(tmp_path / "mirror", compress=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(StallingHandler, directory=str(served))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        process = popen(python_module("initstudy.data", "download.sources=[mirrors]", f"download.mirrors=[{url}]"),
                        study_repo)  # fmt: skip
        assert StallingHandler.sent_half.wait(60)
        time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        server.shutdown()
    raw = study_repo / "data/raw"
    # Anything there but the download lock (emptied when its holder died) must be a complete, verified file.
    leftovers = (
        [p for p in raw.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if raw.exists() else []
    )
    expected = synthetic_mnist.sha256
    for path in leftovers:  # anything there must be a complete, verified file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected.get(path.name), path


@pytest.mark.slow
def test_file_corrupted_after_download_is_detected_and_repaired(
    study_repo: Path, synthetic_mnist: SyntheticMNIST
):
    run(dvc("repro", "download"), study_repo)
    path = study_repo / "data/raw/MNIST/raw/t10k-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    status = run(dvc("status", "download"), study_repo).stdout
    assert "modified" in status and "data/raw/MNIST/raw" in status, status
    repaired = run(dvc("repro", "download"), study_repo)
    assert "fails verification; removed and fetched again" in repaired.stdout + repaired.stderr
    assert path.read_bytes() == data
    assert "up to date" in run(dvc("status", "download"), study_repo).stdout


def test_completion_requires_the_same_identity_and_every_result_file(tmp_path):
    from initstudy.runs.rundir import MARKER, RESULT_FILES, is_complete, write_marker

    for name in RESULT_FILES:
        (tmp_path / name).write_text("x")
    write_marker(tmp_path, "abc")
    assert is_complete(tmp_path, "abc")
    assert not is_complete(tmp_path, "abd")  # another config, code, data or numerics
    (tmp_path / MARKER).write_text(json.dumps({"config_hash": "abc"}))  # a marker from before identities
    assert not is_complete(tmp_path, "abc")
    for damaged in ("{not json", "[1, 2]", '"abc"'):
        (tmp_path / MARKER).write_text(damaged)
        assert not is_complete(tmp_path, "abc")
    write_marker(tmp_path, "abc")
    (tmp_path / "history.csv").unlink()
    assert not is_complete(tmp_path, "abc")


def test_identity_changes_with_config_code_and_data(monkeypatch):
    from omegaconf import OmegaConf

    from initstudy.config.compose import compose_config
    from initstudy.runs import rundir

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cfg = compose_config([])
    base = rundir.run_identity(cfg)
    assert rundir.run_identity(compose_config(["optimizer.lr=0.002"])) != base
    other_data = OmegaConf.merge(cfg, {"download": {"sha256": {"t10k-labels-idx1-ubyte": "0" * 64}}})
    assert rundir.run_identity(other_data) != base
    monkeypatch.setattr(rundir, "code_fingerprint", lambda: "other training code")
    assert rundir.run_identity(cfg) != base
