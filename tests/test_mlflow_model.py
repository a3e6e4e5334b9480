"""A run as MLflow users expect it: its network as an ``mlflow.pytorch`` model (signature, input example, the
lock's pins), its data through ``log_input`` (the IDX files' SHA-256), its whole job log, no seed metric; the
report's registration of median runs (idempotent, loadable in a fresh process, usable by ``initstudy
evaluate``), and a report that is written without a registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, python_module, run
from initstudy.config.compose import compose_config, config_hash
from initstudy.tracking import model

# The module's tests share the trained run (conftest.trained), a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("mlflow_model")

RUN = "runs/he_uniform/seed_0"


def client_of(repo: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def mlflow_run(repo: Path):
    run_id = json.loads((repo / RUN / "provenance.json").read_text())["mlflow_run_id"]
    return client_of(repo).get_run(run_id)


# ---- fast ------------------------------------------------------------------------------------------------------


def test_the_model_environment_is_the_locks_pins() -> None:
    lock = (REPO / "requirements.lock").read_text()
    pins = model.pinned_requirements()
    assert [pin.split("==")[0] for pin in pins] == ["torch", "torchvision", "pytorch-lightning", "mlflow"]
    for pin in pins:
        assert f"\n{pin} " in lock or f"\n{pin}\n" in lock, pin


def test_logging_a_model_changes_no_runs_identity(at_repo: Path) -> None:
    on, off = compose_config([]), compose_config(["logger.log_model=false"])
    assert on.logger.log_model is True and off.logger.log_model is False
    assert config_hash(on) == config_hash(off)
    assert compose_config(["experiment=depth"]).logger.log_model is False


def test_the_data_digest_names_the_files_sha256() -> None:
    sha = {
        name: f"{i:064x}" for i, name in enumerate(model.DATA_FILES["training"] + model.DATA_FILES["test"])
    }
    inputs = model.datasets({"download": {"sha256": sha}, "data": {"root": "data/raw"}}, Path("/study"))
    by_context = {i.tags[0].value: i for i in inputs}
    assert set(by_context) == {"training", "test"}
    test = by_context["test"]
    assert test.dataset.digest == model.combined_digest({n: sha[n] for n in model.DATA_FILES["test"]})
    assert {t.key: t.value for t in test.tags[1:]} == {
        f"sha256.{n}": sha[n] for n in model.DATA_FILES["test"]
    }
    assert by_context["training"].dataset.digest != test.dataset.digest


def test_the_report_is_written_without_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No store, or an unreachable server: every median run is named, with the reason no version is."""
    from initstudy.report import registry

    monkeypatch.setenv("INITSTUDY_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = pd.DataFrame({"init": ["a"] * 3 + ["b"] * 2, "seed": [0, 1, 2, 0, 1], "status": ["complete"] * 5,
                         "test/acc": [0.9, 0.7, 0.8, 0.5, 0.6],
                         "run_dir": [str(tmp_path / f"r{i}") for i in range(5)]})  # fmt: skip
    logger = {"tracking_uri": None, "experiment_name": "initstudy", "offline": False}
    rows = registry.register_medians(runs, {"logger": logger})
    assert rows.seed.tolist() == [2, 0] and rows.model_name.tolist() == ["initstudy-a", "initstudy-b"]
    assert rows.model_version.isna().all() and set(rows.registry) == {"none: no MLflow store"}
    unreachable = {**logger, "tracking_uri": "http://127.0.0.1:9"}
    rows = registry.register_medians(runs, {"logger": unreachable})
    assert set(rows.registry) == {"none: the MLflow store is not reachable"}
    rows = registry.register_medians(runs, {"logger": {**logger, "offline": True}})
    assert rows.registry.str.contains("offline").all()
    # The record of an earlier registration of the same run (a clone that pulled the runs) is kept as it was.
    previous = rows.assign(
        model_version=pd.array([3, None], dtype="Int64"), registry=["registered", "none: x"]
    )
    path = tmp_path / "registered_models.csv"
    previous.to_csv(path, index=False)
    kept = registry.register_medians(runs, {"logger": logger}, previous=registry.read_previous(path))
    assert kept.model_version.tolist()[0] == 3 and kept.registry.tolist() == ["registered", "none: x"]
    moved = runs.assign(seed=[0, 1, 7, 0, 1])  # another run is the median of a: its record does not apply
    kept = registry.register_medians(moved, {"logger": logger}, previous=registry.read_previous(path))
    assert kept.model_version.isna().all() and kept.registry.tolist() == ["none: no MLflow store", "none: x"]


# ---- a real run --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_run_logs_its_model_with_signature_example_and_pins(trained: Path) -> None:
    import mlflow
    from mlflow.models import get_model_info

    child = mlflow_run(trained)
    (output,) = child.outputs.model_outputs
    with model.tracking_uri(f"sqlite:///{trained / 'mlflow.db'}"):
        info = get_model_info(f"models:/{output.model_id}")
        files = mlflow.artifacts.download_artifacts(f"models:/{output.model_id}")
    # In the run's experiment (where its page and the experiment's model list look), ready to load.
    logged = client_of(trained).get_logged_model(output.model_id)
    assert logged.experiment_id == child.info.experiment_id and str(logged.status).endswith("READY")
    assert info.flavors.keys() >= {"pytorch", "python_function"}
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] in ([-1, 784], (-1, 784))
    assert info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] in ([-1, 10], (-1, 10))
    assert info.saved_input_example_info is not None
    assert (Path(files) / "requirements.txt").read_text().split() == model.pinned_requirements()


@pytest.mark.slow
def test_the_run_logs_its_data_with_the_files_digests(trained: Path) -> None:
    import yaml

    sha = yaml.safe_load((trained / RUN / "config.yaml").read_text())["download"]["sha256"]
    inputs = {i.tags[0].value: i for i in mlflow_run(trained).inputs.dataset_inputs
              if i.tags and i.tags[0].key == "mlflow.data.context"}  # fmt: skip
    assert set(inputs) == {"training", "test"}
    for context, files in model.DATA_FILES.items():
        assert inputs[context].dataset.digest == model.combined_digest({name: sha[name] for name in files})
        tags = {tag.key: tag.value for tag in inputs[context].tags}
        assert all(tags[f"sha256.{name}"] == sha[name] for name in files)


@pytest.mark.slow
def test_the_job_log_artifact_is_the_run_folders_file_and_the_seed_no_metric(trained: Path) -> None:
    import mlflow

    child = mlflow_run(trained)
    logged = mlflow.artifacts.download_artifacts(
        run_id=child.info.run_id, artifact_path="train.log", tracking_uri=f"sqlite:///{trained / 'mlflow.db'}"
    )
    text = (trained / RUN / "train.log").read_bytes()
    assert Path(logged).read_bytes() == text and b"test/acc" in text
    assert "final/seed" not in child.data.metrics and "final/test/acc" in child.data.metrics
    assert child.data.params["seed"] == "0" and child.data.tags["seed"] == "0"


LOAD = """
import json, sys
import mlflow.pytorch, torch
from initstudy.data.datamodule import load_mnist
mlflow.set_tracking_uri(sys.argv[1])
network = mlflow.pytorch.load_model(sys.argv[2])
images, _ = load_mnist(sys.argv[3], train=False)
with torch.inference_mode():
    print(json.dumps(network(images).argmax(dim=1).tolist()))
"""


@pytest.mark.slow
def test_the_report_registers_the_median_run_once_and_it_loads_in_a_fresh_process(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from initstudy.report import registry

    monkeypatch.setenv("INITSTUDY_ROOT", str(trained))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    metrics = json.loads((trained / RUN / "metrics.json").read_text())
    runs = pd.DataFrame({"init": ["he_uniform"], "seed": [0], "status": ["complete"],
                         "test/acc": [metrics["test/acc"]], "run_dir": [str(trained / RUN)]})  # fmt: skip
    config = yaml.safe_load((trained / RUN / "config.yaml").read_text())
    first = registry.register_medians(runs, config)
    again = registry.register_medians(runs, config)
    assert first.equals(again) and first.registry.tolist() == ["registered"]
    name, version = first.model_name[0], int(first.model_version[0])
    assert (name, version) == ("initstudy-he_uniform", 1)
    client = client_of(trained)
    (registered,) = client.search_model_versions(f"name = '{name}'")
    assert registered.run_id == mlflow_run(trained).info.run_id

    uri, reference = f"sqlite:///{trained / 'mlflow.db'}", f"models:/{name}/{version}"
    loaded = subprocess.run([sys.executable, "-c", textwrap.dedent(LOAD), uri, reference,
                             str(trained / "data/raw")], capture_output=True, text=True, check=True,
                            cwd=trained, timeout=300)  # fmt: skip
    predicted = np.load(trained / RUN / "test_predictions.npy")[1]
    assert json.loads(loaded.stdout.splitlines()[-1]) == predicted.tolist()
    evaluated = json.loads(run(python_module("initstudy", "evaluate", reference), trained).stdout)
    assert evaluated["reproduced"]


def test_the_fluent_uri_is_put_back_unset_included(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """log_model needs MLflow's fluent URI; the study reads $MLFLOW_TRACKING_URI, which MLflow sets with it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with model.tracking_uri(f"sqlite:///{tmp_path / 'a.db'}"):
        assert "a.db" in os.environ["MLFLOW_TRACKING_URI"]
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with model.tracking_uri(f"sqlite:///{tmp_path / 'a.db'}"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


class CollidingClient:
    """log_inputs fails as a database does when another job inserts the same dataset at that moment."""

    def __init__(self, error: str, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def log_inputs(self, run_id: str, datasets: list) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(self.error)


def test_jobs_that_log_the_same_dataset_at_once_do_not_fail() -> None:
    cfg = {"download": {"sha256": {}}, "data": {"root": "data/raw"}}
    collided = CollidingClient(
        'BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value "dataset_pk"', 1
    )
    model.log_data(collided, "run", cfg, Path("/study"))
    assert collided.calls == 2
    other = CollidingClient("RESOURCE_DOES_NOT_EXIST: run not found", 1)
    with pytest.raises(RuntimeError, match="not found"):
        model.log_data(other, "run", cfg, Path("/study"))
    assert other.calls == 1
