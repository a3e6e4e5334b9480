"""The study beyond the default launcher: submitit (locally, and SLURM without a cluster) and DVC experiments."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, dvc, python_module, run

SWEEP = [(init, seed) for init in ("zeros", "he_uniform") for seed in (0, 1)]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

# Per-job resources each launcher option must request: case -> (option, extra overrides, expected values).
# slurm and slurm_gpu are conf/hydra/launcher/; submitit_slurm is the plugin's own (no study defaults).
SLURM = {"timeout_min": 60, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 4, "mem_gb": 4}
GPU = ["hydra.launcher.gpus_per_node=1"]
LAUNCHERS = {
    "slurm": ("slurm", [], {**SLURM, "gpus_per_node": None}),
    "slurm_gpu": ("slurm_gpu", [], {**SLURM, "cpus_per_task": 2, "mem_gb": 8, "gpus_per_node": 1}),
    "slurm+gpu_override": ("slurm", GPU, {**SLURM, "gpus_per_node": 1}),
    "submitit_slurm+gpu_override": ("submitit_slurm", GPU, {"timeout_min": 60, "gpus_per_node": 1}),
}


def mlflow_runs(repo: Path) -> tuple[list, list]:
    """(parent runs, child runs) of the study's experiment in the repo's own store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("initstudy").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


# ---- submitit, local ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_submitit_local_sweep_completes_every_run_under_one_mlflow_parent(synthetic_data_repo: Path):
    repo = synthetic_data_repo
    result = run(
        python_module(
            "initstudy.train",
            "--multirun",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
        ),
        repo,
        timeout=300,
    )
    output = result.stdout + result.stderr
    # submitit's local launcher does not check batches: each job is checked, and added to the manifest, as it
    # starts (in the order the jobs start); the sweep is still every job of the grid.
    assert "Submitit 'local' sweep output dir" in output, output[-3000:]
    manifest = pd.read_csv(repo / "runs/manifest.csv")
    assert sorted(zip(manifest.init, manifest.seed, strict=True)) == sorted(SWEEP)
    recorded = {}
    for init, seed in SWEEP:
        run_dir = repo / "runs" / init / f"seed_{seed}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 1 and metrics["init"] == init and metrics["seed"] == seed
        recorded[f"{init}/seed_{seed}"] = json.loads((run_dir / "provenance.json").read_text())

    # Every job ran as a submitit job, its log under runs/.submitit/<job id>/.
    logs = sorted((repo / "runs/.submitit").glob("*/*_log.out"))
    assert len(logs) == 4, logs
    for log in logs:
        assert "Job completed successfully" in log.read_text(), log

    # The parent run's id reached the submitit jobs (INITSTUDY_MLFLOW_PARENT_RUN_ID): all 4 are its children.
    parents, children = mlflow_runs(repo)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == sorted(recorded)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert recorded[child.info.run_name]["mlflow_run_id"] == child.info.run_id
        assert "final/test/acc" in child.data.metrics


# ---- SLURM, without a cluster -------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(LAUNCHERS))
def test_slurm_launcher_options_compose_with_the_study_resources(case: str, monkeypatch):
    from initstudy.config.compose import compose_config
    from initstudy.sweep.jobs import plan

    monkeypatch.chdir(REPO)  # params.yaml's hydra.searchpath (file://conf) is relative to the repo root
    option, extra, expected = LAUNCHERS[case]
    overrides = [f"hydra/launcher={option}", *extra]
    launcher = compose_config(overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")  # submitit's, or the project's extension of it
    assert {key: launcher[key] for key in expected} == expected
    assert launcher.submitit_folder == "runs/.submitit/%j"
    if option != "submitit_slurm":
        assert launcher.name == "initstudy"
        assert list(launcher.setup) == [f"export OMP_NUM_THREADS={expected['cpus_per_task']}"]
    # train.main validates every job with the launcher chosen before anything is submitted.
    jobs = plan([*overrides, "init=zeros,he_uniform", "seed=0"], multirun=True, verify_data=False)
    assert {(job.init, job.seed) for job in jobs} == {("zeros", 0), ("he_uniform", 0)}


def test_submitit_local_passes_the_pre_validation(monkeypatch):
    from initstudy.sweep.jobs import plan

    monkeypatch.chdir(REPO)
    overrides = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "init=zeros", "seed=0"]
    assert len(plan(overrides, multirun=True, verify_data=False)) == 1


def fake_slurm(folder: Path) -> dict[str, str]:
    """`srun` (submitit looks for it) and an `sbatch` that keeps the script it is given, then refuses it."""
    folder.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": '#!/bin/sh\ncp "$1" "$FAKE_SBATCH_CAPTURE"\necho "fake sbatch: no cluster here" >&2\nexit 1\n',
    }
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {
        "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_SBATCH_CAPTURE": str(folder / "captured.sh"),
    }


@pytest.mark.slow
def test_slurm_gpu_sweep_submits_one_job_array_with_the_study_resources(
    synthetic_data_repo: Path, tmp_path: Path
):
    """The real SLURM launcher up to `sbatch`, which a fake one stands in for: the script it would submit."""
    repo = synthetic_data_repo
    env = fake_slurm(tmp_path / "bin")
    result = run(
        python_module("initstudy.train", "--multirun", "hydra/launcher=slurm_gpu", "logger=offline"),
        repo,
        check=False,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0 and "fake sbatch: no cluster here" in result.stderr, result.stderr[-3000:]
    # The sweep was validated and its manifest written before the submission.
    assert len(pd.read_csv(repo / "runs/manifest.csv")) == 4
    script = Path(env["FAKE_SBATCH_CAPTURE"]).read_text()
    flags = dict(
        line.removeprefix("#SBATCH --").split("=", 1) for line in script.splitlines() if "#SBATCH --" in line
    )
    logs = repo.resolve() / "runs/.submitit/%A_%a"
    expected = {
        "array": "0-3%4",  # the 4 jobs as one array, all at once (array_parallelism 64)
        "job-name": "initstudy",
        "time": "60",
        "nodes": "1",
        "ntasks-per-node": "1",
        "cpus-per-task": "2",
        "gpus-per-node": "1",
        "mem": "8GB",
        "output": f"{logs}/%A_%a_0_log.out",
        "error": f"{logs}/%A_%a_0_log.err",
    }
    assert {key: flags.get(key) for key in expected} == expected, script
    assert "export OMP_NUM_THREADS=2" in script
    assert "srun" in script and "-m submitit.core._submit" in script


@pytest.mark.slow
def test_cfg_hydra_prints_the_launcher_resources():
    """What the README tells users to run to see the resources a launcher option requests."""
    result = run(
        python_module(
            "initstudy.train", "hydra/launcher=slurm_gpu", "--cfg", "hydra", "-p", "hydra.launcher"
        ),
        REPO,
        timeout=120,
    )
    launcher = yaml.safe_load(result.stdout)
    assert launcher["gpus_per_node"] == 1 and launcher["timeout_min"] == 60 and launcher["mem_gb"] == 8


# ---- DVC experiments ----------------------------------------------------------------------------------


def tiny_params_as_committed() -> str:
    """The repository's own params.yaml, comments and layout as they are, with the tiny study's values: two
    initializers x one seed, 1 epoch, small batches."""
    text = (REPO / "params.yaml").read_text()
    for old, new in [
        ("max_epochs: 10\n", "max_epochs: 1\n"),
        ("batch_size: 64\n", "batch_size: 32\n"),
        ("val_size: 10000\n", "val_size: 100\n"),  # of the 600 synthetic training images
        ("init: zeros,random_normal,glorot_uniform,he_uniform\n", "init: zeros,he_uniform\n"),
        ("seed: 0,1,2,3,4\n", "seed: '0'\n"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_dvc_exp_run_sets_a_comma_value_and_a_parameter_and_leaves_the_rest_of_params_yaml(study_repo: Path):
    repo = study_repo
    params = tiny_params_as_committed()
    (repo / "params.yaml").write_text(params)
    # `report` and what it needs (download, train, diagnose); the pipeline's other studies are not wanted here.
    run(dvc("repro", "report"), repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "baseline"], repo)

    # As docs/cluster.md writes it: the comma value in Hydra's quotes inside the shell's.
    unquoted = run(dvc("exp", "run", "report", "-S", "hydra.sweeper.params.seed=0,1"), repo, check=False)
    assert unquoted.returncode != 0 and "can't be used without `--queue`" in unquoted.stderr, unquoted.stderr
    seeds = "hydra.sweeper.params.seed='0,1'"
    experiment = run(dvc("exp", "run", "report", "-S", seeds, "-S", "optimizer.lr=0.002"), repo).stdout
    assert "Running stage 'train'" in experiment and "Running stage 'report'" in experiment, experiment
    assert "Running stage 'download'" not in experiment
    # Only the two values changed: every comment and the layout are as committed.
    assert (repo / "params.yaml").read_text() == params.replace("lr: 0.001\n", "lr: 0.002\n").replace(
        "seed: '0'\n", "seed: 0,1\n"
    )

    shown = json.loads(run(dvc("exp", "show", "--json"), repo).stdout)
    baseline = next(entry for entry in shown if entry["rev"] != "workspace")
    assert baseline["data"]["params"]["params.yaml"]["data"]["optimizer"]["lr"] == 0.001
    experiments = [rev for group in baseline["experiments"] or [] for rev in group["revs"]]
    assert len(experiments) == 1, experiments
    data = experiments[0]["data"]
    values = data["params"]["params.yaml"]["data"]
    assert values["optimizer"]["lr"] == 0.002 and values["hydra"]["sweeper"]["params"]["seed"] == "0,1"
    metrics = data["metrics"]["reports/metrics.json"]["data"]
    assert set(metrics) == {"zeros", "he_uniform"} and metrics["he_uniform"]["n_runs"] == 2
    assert 0 <= metrics["he_uniform"]["test_acc_mean"] <= 1

    # Run in the workspace: its results are applied there, and its runs are in the repo's MLflow store.
    for seed in (0, 1):
        config = yaml.safe_load((repo / f"runs/he_uniform/seed_{seed}/config.yaml").read_text())
        assert config["optimizer"]["lr"] == 0.002
    parents, children = mlflow_runs(repo)
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents + children)
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001"] * 2 + ["0.002"] * 4


def test_console_script_lists_the_stages_and_the_common_overrides():
    result = run([str(Path(sys.executable).parent / "initstudy"), "--help"], REPO)
    for word in (
        "data",
        "train",
        "diagnose",
        "report",
        "mlflow_import",
        "init=<name>",
        "hydra/launcher=",
        "dvc repro",
    ):
        assert word in result.stdout, word
