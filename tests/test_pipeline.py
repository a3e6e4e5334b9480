"""End to end, for real: the Hydra multirun, MLflow, and `dvc repro` on tiny synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import dvc, edit_params, python_module, run

RUN_FILES = (
    "metrics.json",
    "history.csv",
    "timing.json",
    "config.yaml",
    "test_predictions.npy",
    "weights_initial.pt",
    "weights_final.pt",
    ".complete",
    ".hydra/config.yaml",
)
SWEEP = [(init, seed) for init in ("zeros", "he_uniform") for seed in (0, 1)]


def search_runs(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("initstudy").experiment_id])


@pytest.mark.slow
@pytest.mark.log_model
def test_multirun_writes_every_file_and_mlflow_run_and_is_bitwise_reproducible(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    first = run(python_module("initstudy.train", "--multirun"), repo)
    assert "4 runs checked" in first.stderr + first.stdout
    manifest = pd.read_csv(repo / "runs/manifest.csv")
    assert list(zip(manifest.init, manifest.seed, strict=True)) == SWEEP
    results, numerics_records = {}, set()
    for init, seed in SWEEP:
        run_dir = repo / "runs" / init / f"seed_{seed}"
        for name in RUN_FILES:
            assert (run_dir / name).is_file(), run_dir / name
        numerics_records.add((run_dir / "numerics.json").read_bytes())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {"test/acc", "test/loss", "val/acc", "steps_to_97", "train/loss_auc", "diverged"} <= set(
            metrics
        )
        assert metrics["epochs_completed"] == 1 and metrics["diverged"] is False
        timing = json.loads((run_dir / "timing.json").read_text())
        assert timing["seconds_per_epoch"] > 0 and "wall_seconds" not in metrics
        history = pd.read_csv(run_dir / "history.csv")
        assert {"train/loss", "val/loss", "val/acc", "val/acc_step", "val/loss_step"} <= set(history.metric)
        assert not history.metric.str.startswith("test/").any()  # the test set: once, in metrics.json
        results[(init, seed)] = (
            (run_dir / "metrics.json").read_bytes(),
            (run_dir / "history.csv").read_bytes(),
        )
        assert (
            metrics["test/acc"] > 0.5 if init == "he_uniform" else metrics["test/distinct_predictions"] == 1
        )

    # The 4 jobs ran in one process: each records the profile it ran under, the process's first job too.
    assert len(numerics_records) == 1, numerics_records
    described = json.loads(numerics_records.pop())
    assert described["flush_denormal"] == "all" and described["deterministic_algorithms"] is True

    # MLflow: one parent for the sweep, a finished child per (init, seed) with config, metrics and tags.
    runs = search_runs(repo)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == sorted(f"{i}/seed_{s}" for i, s in SWEEP)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        init, seed = child.data.tags["initializer"], int(child.data.tags["seed"])
        assert len(child.data.tags["git_commit"]) == 40 and child.data.tags["git_dirty"] in ("true", "false")
        assert (
            child.data.params["init.name"] == init and child.data.params["model.hidden_sizes"] == "[256, 128]"
        )
        metrics = json.loads(results[(init, seed)][0])
        assert child.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
        assert child.data.metrics["final/test/acc"] == metrics["test/acc"]

    # A second sweep over complete folders recomputes nothing.
    again = run(python_module("initstudy.train", "--multirun"), repo)
    assert (again.stdout + again.stderr).count("skipped") == 4

    # Two clean runs: byte-identical results.
    for leftover in ("runs", "mlartifacts"):
        shutil.rmtree(repo / leftover)
    (repo / "mlflow.db").unlink()
    run(python_module("initstudy.train", "--multirun"), repo)
    for (init, seed), (metrics_bytes, history_bytes) in results.items():
        run_dir = repo / "runs" / init / f"seed_{seed}"
        assert (run_dir / "metrics.json").read_bytes() == metrics_bytes
        assert (run_dir / "history.csv").read_bytes() == history_bytes


@pytest.mark.slow
@pytest.mark.log_model
def test_dvc_repro_runs_the_whole_pipeline_then_tracks_changes(study_repo: Path):
    repo = study_repo
    repro = run(dvc("repro", "report"), repo)  # the default study; the depth stages are tested apart
    for stage in ("download", "train", "diagnose", "report"):
        assert f"Running stage '{stage}'" in repro.stdout
    for name in (
        "metrics.json",
        "summary.csv",
        "comparisons.csv",
        "curves.csv",
        "report.md",
        "endpoints.csv",
        "figures/forest_plot.png",
        "figures/final_accuracy.png",
        "figures/time_to_97.png",
        "figures/loss_by_step.png",
    ):
        assert (repo / "reports" / name).is_file(), name
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics) == {"zeros", "he_uniform"} and metrics["he_uniform"]["n_runs"] == 2
    assert "he_uniform.test_acc_mean" in run(dvc("metrics", "show"), repo).stdout
    plots = json.loads(run(dvc("plots", "show", "--json"), repo).stdout)
    assert "reports/curves.csv" in plots["data"]
    summary = pd.read_csv(repo / "reports/summary.csv")
    assert summary.acc_mean.round(6).tolist() == [round(metrics[i]["test_acc_mean"], 6) for i in summary.init]

    assert "## Signal propagation at initialization" in (repo / "reports/report.md").read_text()
    # Each initializer's median run (of 2 seeds: the lower), registered in the study's MLflow store.
    registered = pd.read_csv(repo / "reports/registered_models.csv")
    assert registered.model_name.tolist() == ["initstudy-he_uniform", "initstudy-zeros"]
    assert registered.model_version.tolist() == [1, 1] and set(registered.registry) == {"registered"}
    # Nothing changed: nothing runs.
    assert "Running stage" not in run(dvc("repro", "report"), repo).stdout

    # One hyperparameter edited: params diff names exactly it, and train + report re-run.
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], repo)
    edit_params(repo, optimizer__lr=0.002)
    diff = run(dvc("params", "diff", "--md"), repo).stdout
    changed = [line for line in diff.splitlines() if line.startswith("| params.yaml")]
    assert len(changed) == 1 and "optimizer.lr" in changed[0] and "0.002" in changed[0], diff
    rerun = run(dvc("repro", "report"), repo).stdout
    assert "Running stage 'train'" in rerun and "Running stage 'report'" in rerun
    assert "Running stage 'download'" not in rerun
    assert (
        yaml.safe_load((repo / "runs/he_uniform/seed_0/config.yaml").read_text())["optimizer"]["lr"] == 0.002
    )
    metrics_diff = json.loads(run(dvc("metrics", "diff", "--json"), repo).stdout)["reports/metrics.json"]
    assert any(key.endswith("test_loss_mean") for key in metrics_diff), metrics_diff
