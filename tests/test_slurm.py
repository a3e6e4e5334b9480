"""The study on a real SLURM cluster: munge, slurmctld and slurmd on this machine (scripts/local-slurm.sh),
jobs submitted by the study's own launcher (``hydra/launcher=slurm``: submitit, sbatch, srun).

Checked: every run is a SLURM job with the same results, byte for byte, as the basic launcher's; inside a job,
Lightning sees one process on the job's CPU (not a multi-process SLURM launch, not the node's CPUs); a job
cancelled mid-run and a killed launcher lose nothing, and the same command then re-trains only the missing
run; a job past its time limit is requeued by submitit and its run completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import services
from conftest import SyntheticMNIST, make_study_repo, python_module, run
from initstudy.runs import rundir

# The real services (SLURM, PostgreSQL) start on one pytest-xdist worker at a time (`make test`: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("services")

RESULT_FILES = ("metrics.json", "history.csv")
TWO_RUNS = ["--multirun", "init=zeros,he_uniform", "seed=0", "logger=offline"]


def study(base: Path, synthetic_mnist: SyntheticMNIST) -> Path:
    repo = make_study_repo(base, synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    return repo


def results(repo: Path) -> dict[str, str]:
    """sha256 of every run's result files, by path under runs/."""
    return {
        str(path.relative_to(repo / "runs")): hashlib.sha256(path.read_bytes()).hexdigest()
        for name in RESULT_FILES
        for path in sorted((repo / "runs").rglob(name))
        if ".staging" not in path.parts
    }


def submitit_jobs(repo: Path) -> list[str]:
    """The folders submitit made, one per submitted job: ``<array id>_<index>``, or the job id of a single job."""
    folders = (repo / "runs/.submitit").iterdir()
    return sorted(p.name for p in folders if p.is_dir() and any(p.glob("*_submitted.pkl")))


def finished(cluster: services.SlurmCluster) -> dict[str, str]:
    """Job id -> state of the study's jobs in SLURM's job-completion log (the last record of each)."""
    return {r["JobId"]: r["JobState"] for r in cluster.completed() if r["Name"] == "initstudy"}


@pytest.mark.slow
def test_each_run_is_a_slurm_job_with_the_basic_launchers_results(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST, slurm_cluster: services.SlurmCluster
):
    basic = study(tmp_path / "basic", synthetic_mnist)
    run(python_module("initstudy.train", *TWO_RUNS), basic, timeout=300)

    repo = study(tmp_path / "slurm", synthetic_mnist)
    records = tmp_path / "probe-records"
    env = {**slurm_cluster.env, **services.probe_path(tmp_path / "probe", records)}
    result = run(python_module("initstudy.train", *TWO_RUNS, *services.slurm_overrides()), repo, env=env,
                 timeout=600)  # fmt: skip
    output = result.stdout + result.stderr
    assert "2 runs checked" in output and "Submitit 'slurm' sweep output dir" in output, output[-3000:]

    # Same bytes as the basic launcher (numerics=portable: one thread, pinned kernels, in both).
    assert len(results(repo)) == 4 and results(repo) == results(basic)
    for init in ("zeros", "he_uniform"):
        assert rundir.read_marker(repo / "runs" / init / "seed_0") is not None

    # Each run was a SLURM job: submitit's folders, the probe inside each job and SLURM's own completion log
    # name the same jobs, all COMPLETED.
    jobs = submitit_jobs(repo)
    assert len(jobs) == 2, jobs
    probes = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    assert sorted(p["slurm_array_job"] for p in probes) == jobs
    job_ids = {p["slurm_job_id"] for p in probes}
    # The launcher returns once the results are written; SLURM records the job's end just after.
    services.wait_for(lambda: job_ids <= set(finished(slurm_cluster)), 60, f"jobs {job_ids} to end")
    assert finished(slurm_cluster) == dict.fromkeys(job_ids, "COMPLETED")
    for job in jobs:
        assert (
            "Job completed successfully"
            in next((repo / "runs/.submitit" / job).glob("*_log.out")).read_text()
        )

    # Inside the job, Lightning's SLURMEnvironment takes over (srun sets SLURM_NTASKS), and sees one task of
    # one process: not a multi-process launch. The job runs on its own CPU (task/affinity), not the node's.
    for probe in probes:
        assert probe["slurm_environment_detected"] is True
        assert probe["cluster_environment"] == "SLURMEnvironment"
        assert probe["world_size"] == 1 and probe["global_rank"] == 0
        assert probe["num_nodes"] == 1 and probe["num_devices"] == 1
        assert probe["strategy"] == "SingleDeviceStrategy"
        assert probe["torch_threads"] == 1 and probe["slurm_cpus_per_task"] == "1"
        assert probe["omp_num_threads"] == "1"
        if probe["machine_cpus"] > 1 and "task/affinity" in (slurm_cluster.folder / "slurm.conf").read_text():
            assert len(probe["cpu_affinity"]) == 1, probe


def launcher_setup(*lines: str) -> str:
    """A ``hydra.launcher.setup`` override: shell lines the sbatch script runs before ``srun`` (the study's
    OMP_NUM_THREADS line first, as in conf/hydra/launcher/slurm.yaml)."""
    quoted = ",".join(f"'{line}'" for line in ("export OMP_NUM_THREADS=1", *lines))
    return f"hydra.launcher.setup=[{quoted}]"


def mlflow_children(repo: Path) -> tuple[list, list]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("initstudy").experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in found if "mlflow.parentRunId" in r.data.tags]


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.slow
def test_a_cancelled_job_and_a_killed_launcher_lose_nothing(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST, slurm_cluster: services.SlurmCluster
):
    repo = study(tmp_path, synthetic_mnist)
    once = tmp_path / "paused-once"
    # Array task 1 (he_uniform) stops after training, the first time only; the others run through.
    pause = f'if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ ! -e {once} ]; then touch {once}; export INITSTUDY_PAUSE_AT=trained; fi'
    command = python_module("initstudy.train", "--multirun", "init=zeros,he_uniform,glorot_uniform", "seed=0",
                            *services.slurm_overrides(), launcher_setup(pause))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(slurm_cluster.env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    log = (tmp_path / "launcher.log").open("w")
    launcher = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    runs = repo / "runs"
    try:
        services.wait_for(
            lambda: (runs / ".submitit").is_dir() and len(submitit_jobs(repo)) == 3, 120, "3 jobs"
        )
        (array_id,) = {job.split("_")[0] for job in submitit_jobs(repo)}
        paused_log = runs / ".submitit" / f"{array_id}_1" / f"{array_id}_1_0_log.err"
        done = [runs / "zeros/seed_0", runs / "glorot_uniform/seed_0"]
        # Jobs 0 and 2 ended (their result written: the run's log is closed too), job 1 sleeps after training.
        results = [runs / ".submitit" / f"{array_id}_{i}" / f"{array_id}_{i}_0_result.pkl" for i in (0, 2)]
        services.wait_for(
            lambda: all(r.is_file() for r in results) and all((d / rundir.MARKER).is_file() for d in done)
            and paused_log.is_file() and "paused at trained" in paused_log.read_text(),
            480, "two runs complete and the third paused mid-run",
        )  # fmt: skip
        before = {str(d.relative_to(runs)): folder_digest(d) for d in done}
        slurm_cluster.command("scancel", f"{array_id}_1")
        os.killpg(launcher.pid, signal.SIGKILL)  # the login session dies
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        log.close()
    services.wait_for(lambda: not slurm_cluster.queue(), 60, "the cancelled job to leave the queue")
    assert not (runs / "he_uniform/seed_0").exists()  # the cancelled run never reached its folder
    cancelled = [r for r in slurm_cluster.completed() if r.get("JobState") == "CANCELLED"]
    assert len(cancelled) == 1, slurm_cluster.completed()

    # The same command again: the two complete runs are skipped untouched, the cancelled one is trained.
    again = run(command, repo, env=slurm_cluster.env, timeout=600)
    assert "3 runs checked" in again.stdout + again.stderr
    jobs = submitit_jobs(repo)
    assert len(jobs) == 6, jobs
    # Every job of the sweep is submitted again; those whose run is complete only check it and end.
    skipped = [job for job in jobs if not job.startswith(f"{array_id}_") and "skipped" in
               next((runs / ".submitit" / job).glob("*_log.out")).read_text()]  # fmt: skip
    assert len(skipped) == 2, jobs
    after = {str(d.relative_to(runs)): folder_digest(d) for d in done}
    changed = {(folder, name) for folder in before for name in set(before[folder]) | set(after[folder])
               if before[folder].get(name) != after[folder].get(name)}  # fmt: skip
    assert not changed
    manifest = pd.read_csv(runs / "manifest.csv")
    for entry in manifest.itertuples():
        assert rundir.is_complete(runs / entry.run_dir, entry.identity), entry.run_dir

    # MLflow: one parent (the rerun reused it), one FINISHED child per run folder; the cancelled attempt is
    # KILLED (marked by the attempt that replaced it).
    parents, children = mlflow_children(repo)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    statuses = sorted((r.data.tags["initstudy.run_dir"], r.info.status) for r in children)
    assert statuses == [
        ("runs/glorot_uniform/seed_0", "FINISHED"),
        ("runs/he_uniform/seed_0", "FINISHED"),
        ("runs/he_uniform/seed_0", "KILLED"),
        ("runs/zeros/seed_0", "FINISHED"),
    ]


@pytest.mark.slow
def test_sigterm_to_the_launcher_cancels_its_jobs_and_every_run_ends_killed(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST, slurm_cluster: services.SlurmCluster
):
    """`kill PID` of the launching process while its jobs train: exit 143, its jobs cancelled (scancel), the
    runs they were training and the sweep's parent KILLED in MLflow, no run folder written, nothing RUNNING."""
    repo = study(tmp_path, synthetic_mnist)
    command = python_module("initstudy.train", "--multirun", "init=zeros,he_uniform", "seed=0",
                            *services.slurm_overrides(), launcher_setup("export INITSTUDY_PAUSE_AT=fitting"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(slurm_cluster.env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    log_path = tmp_path / "launcher.log"
    with log_path.open("w") as log:
        launcher = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        try:
            runs = repo / "runs"
            services.wait_for(lambda: (runs / ".submitit").is_dir() and len(submitit_jobs(repo)) == 2, 120,
                              "2 jobs")  # fmt: skip
            jobs = submitit_jobs(repo)
            logs = [runs / ".submitit" / job / f"{job}_0_log.err" for job in jobs]
            # At least one job trains (paused inside the fit); the other may still wait for a CPU.
            services.wait_for(lambda: any(p.is_file() and "paused at fitting" in p.read_text() for p in logs),
                              300, "a job paused inside its fit")  # fmt: skip
            os.kill(launcher.pid, signal.SIGTERM)
            status = launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert status == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM; exit status 143" in output and "cancelling the sweep's SLURM jobs" in output
    services.wait_for(lambda: not set(slurm_cluster.queue()) & set(jobs), 60, "the jobs to leave the queue")
    # The cluster is this test's own: its completion log holds these two jobs only.
    assert list(finished(slurm_cluster).values()) == ["CANCELLED", "CANCELLED"], slurm_cluster.completed()
    assert not (runs / "zeros/seed_0").exists() and not (runs / "he_uniform/seed_0").exists()
    parents, children = mlflow_children(repo)
    assert [r.info.status for r in parents] == ["KILLED"], [r.info.status for r in parents]
    assert children and {r.info.status for r in children} == {"KILLED"}, [r.info.status for r in children]


@pytest.mark.slow
def test_a_job_past_its_time_limit_is_requeued_and_its_run_completes(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST, slurm_cluster: services.SlurmCluster
):
    repo = study(tmp_path, synthetic_mnist)
    records = tmp_path / "probe-records"
    env = {**slurm_cluster.env, **services.probe_path(tmp_path / "probe", records)}
    # The first attempt sleeps after training (past the 1-minute limit); the requeued one runs through.
    # slurmctld looks at time limits every 30 s and warns a job once end - now <= signal_delay_s + 30: with
    # 5 s, 25 to 55 s into an attempt, after submitit has set its handler (a warning in the first second
    # would kill the job instead).
    pause = 'if [ -z "$SLURM_RESTART_COUNT" ]; then export INITSTUDY_PAUSE_AT=trained; fi'
    overrides = [*services.slurm_overrides(), "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
                 launcher_setup(pause)]  # fmt: skip
    result = run(python_module("initstudy.train", "--multirun", "init=he_uniform", "seed=0", "logger=offline",
                               *overrides), repo, env=env, timeout=600)  # fmt: skip
    output = result.stdout + result.stderr
    (job,) = submitit_jobs(repo)
    log = "".join(p.read_text() for p in sorted((repo / "runs/.submitit" / job).glob("*_log.*")))
    # submitit logs "Requeued" only after `scontrol requeue` returns, and the requeue's own SIGTERM/SIGKILL
    # (KillWait 5 s) may end the attempt first: SLURM's record below is the proof of the requeue, not that line.
    assert "paused at trained" in log and "this job is timed-out" in log, log[-3000:]
    # One job id, several attempts: the first paused, a requeued one completed the run (a loaded machine may
    # need more than one requeue to fit an attempt into a minute: max_num_timeout allows 3).
    attempts = sorted(json.loads(p.read_text())["slurm_restart_count"] for p in records.glob("*.json"))
    assert attempts[:2] == [0, 1] and attempts == list(range(len(attempts))), attempts
    assert {json.loads(p.read_text())["slurm_job_id"] for p in records.glob("*.json")} == {job}
    run_dir = repo / "runs/he_uniform/seed_0"
    manifest = pd.read_csv(repo / "runs/manifest.csv")
    assert rundir.is_complete(run_dir, manifest.identity[0]), output[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 1
    services.wait_for(lambda: finished(slurm_cluster).get(job) == "COMPLETED", 60, f"job {job} to end")
    # SLURM's own record of the one job: an attempt that ended in a requeue (back to PENDING), then COMPLETED.
    states = [r["JobState"] for r in slurm_cluster.completed() if r["JobId"] == job]
    assert states[-1] == "COMPLETED" and states[:-1] == ["PENDING"] * (len(attempts) - 1), states
