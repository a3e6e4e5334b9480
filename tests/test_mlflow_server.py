"""MLflow as on a cluster: a tracking server on PostgreSQL (scripts/mlflow-server.sh), 8 SLURM jobs writing
to it at once (scripts/local-slurm.sh), and every run, metric point, parameter and artifact found there, in
exact counts, and in the database itself."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

import services
from conftest import SyntheticMNIST, make_study_repo, python_module, run
from initstudy.runs import rundir
from initstudy.tracking import store

# The real services (SLURM, PostgreSQL) start on one pytest-xdist worker at a time (`make test`: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("services")

INITS = "zeros,he_uniform,glorot_uniform,random_normal"
EXPERIMENT = "slurm-postgres"


def artifact_files(client, run_id: str, path: str = "") -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path or None):
        found += artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(found)


class QueueWatch(threading.Thread):
    """Samples squeue while a sweep runs: the most jobs RUNNING at the same moment."""

    def __init__(self, cluster: services.SlurmCluster) -> None:
        super().__init__(daemon=True)
        self.cluster, self.most_running, self.stopped = cluster, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            running = sum(state == "RUNNING" for state in self.cluster.queue().values())
            self.most_running = max(self.most_running, running)


@pytest.mark.slow
def test_eight_slurm_jobs_log_every_run_to_a_server_on_postgresql(
    tmp_path: Path,
    synthetic_mnist: SyntheticMNIST,
    slurm_cluster: services.SlurmCluster,
    mlflow_server: services.MlflowServer,
):
    repo = make_study_repo(tmp_path, synthetic_mnist, log_model=True)  # each run's model reaches the server
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    watch = QueueWatch(slurm_cluster)
    watch.start()
    try:
        run(
            python_module("initstudy.train", "--multirun", f"init={INITS}", "seed=0,1",
                          f"logger.experiment_name={EXPERIMENT}", *services.slurm_overrides()),
            repo,
            env={**slurm_cluster.env, "MLFLOW_TRACKING_URI": mlflow_server.url},
            timeout=900,
        )  # fmt: skip
    finally:
        watch.stopped.set()
        watch.join()
    assert watch.most_running == 8  # 8 writers at once (one core shared by up to 4 jobs)
    assert not (repo / "mlflow.db").exists()  # nothing went to the local store

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 8

    manifest = pd.read_csv(repo / "runs/manifest.csv")
    by_folder = {r.data.tags[store.RUN_DIR_TAG]: r for r in children}
    assert sorted(by_folder) == sorted(f"runs/{d}" for d in manifest.run_dir)
    points = params = files = 0
    for entry in manifest.itertuples():
        folder = repo / "runs" / entry.run_dir
        child = by_folder[f"runs/{entry.run_dir}"]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert rundir.read_json(folder / "provenance.json")["mlflow_run_id"] == child.info.run_id
        # Every point of history.csv, as many times as it is there, and nothing else.
        history = pd.read_csv(folder / "history.csv")
        for metric, rows in history.groupby("metric"):
            logged = client.get_metric_history(child.info.run_id, metric)
            expected = [(int(r.step if metric.endswith("_step") else r.epoch), r.value)  # step series: at the step
                        for r in rows.itertuples() if math.isfinite(r.value)]  # fmt: skip
            assert sorted((m.step, m.value) for m in logged) == sorted(expected), metric
            points += len(logged)
        metrics = json.loads((folder / "metrics.json").read_text())
        # The test set, evaluated once after training: one point each, metrics.json's value.
        for name in ("test/acc", "test/loss"):
            assert [m.value for m in client.get_metric_history(child.info.run_id, name)] == [metrics[name]]
            points += 1
        finals = {f"final/{k}": float(v) for k, v in metrics.items()
                  if isinstance(v, int | float) and not isinstance(v, bool) and k not in store.NOT_METRICS}  # fmt: skip
        assert (
            "final/seed" not in finals and len(child.outputs.model_outputs) == 1
        )  # its mlflow.pytorch model
        assert {k: v for k, v in child.data.metrics.items() if k.startswith("final/")} == finals
        config = store.flat_params(yaml.safe_load((folder / "config.yaml").read_text()))
        assert child.data.params == config
        params += len(child.data.params)
        # The run folder as artifacts, through the server into its artifacts folder (the marker comes after).
        logged_files = artifact_files(client, child.info.run_id)
        on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                         if p.is_file() and p.name != rundir.MARKER)  # fmt: skip
        assert logged_files == on_disk
        copy = Path(client.download_artifacts(child.info.run_id, "metrics.json", str(tmp_path)))
        assert copy.read_bytes() == (folder / "metrics.json").read_bytes()
        files += len(logged_files)
    # The runs' files; each run's mlflow.pytorch model is stored apart, under models/<model id>/.
    base = mlflow_server.folder / "artifacts" / experiment.experiment_id
    stored = [p for p in base.rglob("*") if p.is_file() and p.relative_to(base).parts[0] != "models"]
    assert len(stored) == files
    assert len([p for p in (base / "models").iterdir() if p.is_dir()]) == 8

    # In PostgreSQL itself: the experiment's 9 runs (8 children + the parent) and every metric point.
    import psycopg2

    ports = dict(item.split("=") for item in (mlflow_server.folder / "ports").read_text().split())
    with psycopg2.connect(host="127.0.0.1", port=ports["PG_PORT"], user="mlflow", dbname="mlflow",
                          passfile=str(mlflow_server.folder / "pgpass")) as connection:  # fmt: skip
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (experiment.experiment_id,))
        assert cursor.fetchone()[0] == 9
        cursor.execute(
            "SELECT count(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
            "WHERE r.experiment_id = %s AND m.key NOT LIKE 'final/%%'",
            (experiment.experiment_id,),
        )
        assert cursor.fetchone()[0] == points
    print(f"8 jobs, {points} metric points, {params} params, {files} artifacts checked")
