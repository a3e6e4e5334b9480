"""Sweeps of any key, and any sweeper: the pre-flight is a Hydra callback, every job lands in a run folder of
its own whose name is readable and deterministic, a grid sweep resumes, and Optuna tunes through the same
pre-flight, run folders and MLflow parent run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SyntheticMNIST, make_study_repo, python_module, run
from initstudy.config.compose import compose_config
from initstudy.core.errors import ConfigError
from initstudy.runs import rundir
from initstudy.sweep.jobs import grid, plan, safe_name
from initstudy.tracking import store

GRID_8 = [
    "init=he_uniform,glorot_uniform",
    "optimizer.lr=0.001,0.003",
    "model.activation=relu,tanh",
    "seed=0",
]


def folders(overrides: list[str], multirun: bool = True) -> list[str]:
    return [job.run_dir.as_posix() for job in plan(overrides, multirun, verify_data=False)]


# ---- naming (composed, not trained) ----------------------------------------------------------------------


def test_any_key_can_be_swept_into_distinct_readable_folders(at_repo):
    runs = folders(GRID_8)
    assert len(runs) == len(set(runs)) == 8
    assert "runs/model.activation=tanh,optimizer.lr=0.003/he_uniform/seed_0" in runs
    assert "runs/model.activation=relu,optimizer.lr=0.001/glorot_uniform/seed_0" in runs
    # Never nested: no run folder lies inside another.
    assert not any(a != b and b.startswith(a + "/") for a in runs for b in runs)


@pytest.mark.slow
def test_folder_names_do_not_depend_on_the_order_or_spelling_of_overrides(at_repo):
    shuffled = [
        "model.activation=relu,tanh",
        "seed=0",
        "optimizer.lr=1e-3,0.003",
        "init=he_uniform,glorot_uniform",
    ]
    assert sorted(folders(shuffled)) == sorted(folders(GRID_8))


@pytest.mark.slow
def test_default_sweep_and_depth_experiment_keep_their_layout(at_repo):
    default = folders([])
    assert len(default) == 20 and all(re.fullmatch(r"runs/\w+/seed_\d", run) for run in default)
    assert {job.group for job in plan([], True, verify_data=False)} == {""}
    depth = folders(["experiment=depth", "model.depth=2,5", "init=he_uniform", "seed=0"])
    assert sorted(depth) == [
        f"runs_depth/{activation}/depth_{d}/he_uniform/seed_0"
        for activation in ("linear", "relu", "tanh")
        for d in (2, 5)
    ]
    extra = folders(
        ["experiment=depth", "model.depth=2", "init=he_uniform", "seed=0", "optimizer.lr=0.01,0.02"]
    )
    assert "runs_depth/optimizer.lr=0.02/tanh/depth_2/he_uniform/seed_0" in extra and len(set(extra)) == 6


def test_values_given_once_keep_the_folder_like_an_edit_of_params(at_repo):
    assert folders(["init=zeros", "seed=1", "trainer.max_epochs=2", "logger=offline"]) == [
        "runs/zeros/seed_1"
    ]
    assert folders(["optimizer.lr=0.002"], multirun=False) == ["runs/glorot_uniform/seed_0"]
    assert folders(["init=zeros", "seed=0", "optimizer.lr=0.002", "model.activation=relu,tanh"]) == [
        "runs/model.activation=relu/zeros/seed_0",
        "runs/model.activation=tanh/zeros/seed_0",
    ]


def test_unsafe_values_give_one_safe_folder_name(at_repo):
    runs = folders(["init=zeros", "seed=0", "data.root='x/y z\"q',data"])
    assert sorted(runs) == ["runs/data.root=data/zeros/seed_0", "runs/data.root=x%2Fy%20z%22q/zeros/seed_0"]
    long = safe_name("a=" + "x" * 400)
    assert len(long) <= 200 and long == safe_name("a=" + "x" * 400) and long != safe_name("a=" + "x" * 401)
    assert safe_name("../..") == "..%2F.."


def test_grid_follows_hydra_basic_sweeper_semantics():
    assert grid(["init=a,b", "seed=0,1", "init=c"]) == [["init=c", "seed=0"], ["init=c", "seed=1"]]
    assert grid(["x=range(0,2)", "y=choice(p,q)"]) == [
        ["x=0", "y=p"],
        ["x=0", "y=q"],
        ["x=1", "y=p"],
        ["x=1", "y=q"],
    ]
    with pytest.raises(ConfigError, match="tune"):
        grid(["optimizer.lr=interval(0.001,0.01)"])


def test_the_preflight_is_a_registered_hydra_callback(at_repo):
    hydra_cfg = compose_config(return_hydra_config=True).hydra
    assert hydra_cfg.callbacks.preflight._target_ == "initstudy.sweep.preflight.Preflight"
    assert (
        compose_config(["hydra/sweeper=tune"], return_hydra_config=True).hydra.sweeper.direction == "maximize"
    )


def test_a_job_the_preflight_did_not_plan_is_refused_before_it_trains(at_repo, tmp_path):
    from hydra.types import RunMode
    from omegaconf import open_dict

    from initstudy.sweep import preflight as preflight

    cfg = compose_config(["hydra.run.dir=" + str(tmp_path / "elsewhere")], return_hydra_config=True)
    with open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(tmp_path / "elsewhere")
        cfg.hydra.mode = RunMode.RUN
    callback = preflight.Preflight()
    callback.planned = {str(tmp_path / "planned"): "some identity"}
    callback.on_job_start(config=cfg, task_function=lambda _: None)  # Hydra would only warn if it raised
    with pytest.raises(ConfigError, match="not one the pre-flight validated"):
        preflight.admit(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / ".staging").exists()
    with pytest.raises(RuntimeError, match=re.escape("python -m initstudy.train")):
        preflight.admit(tmp_path / "never-seen")


@pytest.mark.parametrize(
    ("launcher", "checks"),
    [("sequential", True), ("stacked", True), ("slurm", True), ("slurm_gpu", True), ("basic", False)],
)
def test_the_project_launchers_check_each_batch_hydra_hands_them(at_repo, launcher, checks):
    from initstudy.sweep.preflight import launcher_checks_batches

    cfg = compose_config([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert launcher_checks_batches(cfg) is checks


def test_hydra_is_used_through_its_public_api_only():
    offenders = [
        str(path.relative_to(REPO))
        for top in ("src", "tests", "benchmarks")
        for path in (REPO / top).rglob("*.py")
        if re.search(r"^\s*(from|import)\s+hydra\._internal", path.read_text(), re.MULTILINE)
    ]
    assert not offenders


# ---- end to end (tiny synthetic data, 1 epoch) -------------------------------------------------------------


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def data_repo(tmp_path, synthetic_mnist: SyntheticMNIST) -> Path:
    repo = make_study_repo(tmp_path, synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    return repo


@pytest.mark.slow
def test_a_sweep_over_learning_rate_resumes_without_touching_a_file(data_repo: Path):
    sweep = [
        "--multirun",
        "init=zeros,he_uniform",
        "optimizer.lr=0.001,0.003",
        "seed=0",
        "data.train_size=200",
    ]
    run(python_module("initstudy.train", *sweep), data_repo)
    manifest = pd.read_csv(data_repo / "runs/manifest.csv", keep_default_na=False)
    assert len(manifest) == 4 and set(manifest.group) == {"optimizer.lr=0.001", "optimizer.lr=0.003"}
    for entry in manifest.itertuples():
        assert entry.run_dir == f"{entry.group}/{entry.init}/seed_0"
        assert rundir.is_complete(data_repo / "runs" / entry.run_dir, entry.identity)
    assert not (data_repo / "runs/.staging").exists()
    # The diagnose stage's own listing of a grid (jobs.plan) is the jobs Hydra's sweeper made, in its order.
    assert list(manifest.run_dir) == [folder.removeprefix("runs/") for folder in folders(sweep[1:])]
    before = digest(data_repo / "runs")

    again = run(python_module("initstudy.train", *sweep), data_repo)
    assert (again.stdout + again.stderr).count("skipped") == 4, again.stdout + again.stderr
    assert digest(data_repo / "runs") == before


@pytest.mark.slow
def test_optuna_tunes_through_the_same_preflight_run_folders_and_parent_run(data_repo: Path):
    tune = ["--multirun", "hydra/sweeper=tune", "hydra.sweeper.n_trials=3", "init=he_uniform", "seed=0",
            "optimizer.lr=tag(log,interval(1e-4,1e-1))", "data.train_size=200", "data.val_size=50"]  # fmt: skip
    run(python_module("initstudy.train", *tune), data_repo)
    assert not (data_repo / "runs").exists()  # a tuning sweep has a root of its own (runs/ is the study's)
    manifest = pd.read_csv(data_repo / "runs_tune/manifest.csv", keep_default_na=False)
    assert len(manifest) == 3 and manifest.run_dir.is_unique
    accuracies = {}
    for entry in manifest.itertuples():
        folder = data_repo / "runs_tune" / entry.run_dir
        assert entry.group.startswith("optimizer.lr=") and folder.parent.name == "he_uniform"
        assert rundir.is_complete(folder, entry.identity), entry.run_dir
        metrics = json.loads((folder / "metrics.json").read_text())
        accuracies[f"runs_tune/{entry.run_dir}"] = metrics["val/acc"]
    assert sorted(p.name for p in (data_repo / "runs_tune").iterdir() if p.is_file()) == [
        ".initstudy-runs",
        ".initstudy.lock",
        "manifest.csv",
        "optimization_results.yaml",
    ]  # Optuna's own result, kept beside the manifest (and tagged on the parent run)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{data_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    found = client.search_runs([experiment.experiment_id])
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in found if store.SWEEP_ID_TAG in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags[store.RUN_DIR_TAG]: r.data.metrics["final/val/acc"] for r in children} == accuracies
    assert all(r.info.status == "FINISHED" for r in found)
    # The objective Optuna maximised is the validation accuracy each job returned (never the test's).
    assert float(parent.data.tags["best_value"]) == max(accuracies.values())
    assert "best.optimizer.lr" in parent.data.tags


@pytest.mark.slow
def test_a_trial_the_tuner_chose_is_validated_before_it_trains(data_repo: Path):
    tune = ["--multirun", "hydra/sweeper=tune", "hydra.sweeper.n_trials=1", "init=he_uniform", "seed=0",
            "optimizer.lr=interval(-0.5,-0.1)"]  # fmt: skip
    result = run(python_module("initstudy.train", *tune), data_repo, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: invalid optimizer.lr=-0.") and "positive number" in last, last
    leftovers = [p for p in (data_repo / "runs_tune").rglob("*") if p.is_file()]
    # The refused trial's batch wrote no manifest (the root's stamp and lock are the sweep's own).
    assert sorted(p.name for p in leftovers) == [".initstudy-runs", ".initstudy.lock"]


@pytest.mark.slow
def test_a_sweep_started_without_the_numerics_environment_sets_it_before_torch(data_repo: Path):
    """`dvc repro` starts training from a shell holding none of the profile's variables (the test session's
    own environment has them: conftest applies the profile): the sweep sets them before its launcher
    imports torch, and the batch check then finds every job sharing them."""
    from initstudy.config.numerics import MANAGED_VARIABLES

    env = {key: value for key, value in os.environ.items()
           if key not in MANAGED_VARIABLES and key != "MLFLOW_TRACKING_URI"}  # fmt: skip
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    sweep = ["--multirun", "hydra/launcher=stacked", "init=zeros,he_uniform", "seed=0", "data.train_size=200"]
    result = subprocess.run(python_module("initstudy.train", *sweep), cwd=data_repo, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(data_repo / "runs/manifest.csv")) == 2


@pytest.mark.slow
def test_each_batch_hydras_sweeper_makes_is_checked_before_it_runs(data_repo: Path):
    """Hydra's basic sweeper cuts the grid into batches of ``max_batch_size``; the launcher checks each batch
    as Hydra composed it: the first batch trains and writes the manifest, the second (a bad learning rate)
    is refused in one line before it runs, leaving the first run complete and nothing of the second."""
    sweep = ["--multirun", "init=he_uniform", "seed=0", "optimizer.lr=0.001,0", "hydra.sweeper.max_batch_size=1",
             "data.train_size=200"]  # fmt: skip
    result = run(python_module("initstudy.train", *sweep), data_repo, check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(lines) == 1 and "optimizer.lr=0" in lines[0], result.stderr
    manifest = pd.read_csv(data_repo / "runs/manifest.csv", keep_default_na=False)
    assert list(manifest.run_dir) == ["optimizer.lr=0.001/he_uniform/seed_0"]
    assert rundir.is_complete(data_repo / "runs" / manifest.run_dir[0], manifest.identity[0])
    assert not (data_repo / "runs/optimizer.lr=0").exists()
    assert "1 runs checked" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("subdir", "folders"),
    [
        ("${init.name}_${seed}", {"zeros_0", "he_uniform_0"}),
        ("${hydra.job.override_dirname}", {"init=zeros,seed=0", "init=he_uniform,seed=0"}),
    ],
)
def test_hydra_sweep_subdir_resolves_per_job_as_hydra_documents_it(
    data_repo: Path, subdir: str, folders: set
):
    """Interpolations in ``hydra.sweep.subdir`` given on the command line (the examples of Hydra's docs)
    resolve in each job's own config: read from the recorded overrides resolved, they would take the
    primary config's values (glorot_uniform_0 for every job) and the sweep would be refused."""
    sweep = ["--multirun", "init=zeros,he_uniform", "seed=0", f"hydra.sweep.subdir={subdir}",
             "hydra.job.config.override_dirname.exclude_keys=[data.train_size]", "data.train_size=200"]  # fmt: skip
    run(python_module("initstudy.train", *sweep), data_repo)
    manifest = pd.read_csv(data_repo / "runs/manifest.csv", keep_default_na=False)
    assert set(manifest.run_dir) == folders
    for entry in manifest.itertuples():
        assert rundir.is_complete(data_repo / "runs" / entry.run_dir, entry.identity), entry.run_dir
