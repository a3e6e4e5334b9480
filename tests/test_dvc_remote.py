"""The study through a DVC remote: push after `dvc repro`, then a fresh `git clone` + `dvc pull` holds
everything `dvc repro` needs to have nothing to do, and the report regenerates there byte for byte.

What travels (dvc.yaml, .dvcignore): the verified MNIST files and the run folders' machine-independent files
(results, weights, resolved config, numerics settings, completion marker); the reports and diagnostics travel in
git. Timings, logs and provenance stay on the machine that trained (and in its MLflow store), which is what keeps
dvc.lock the same on every machine that reproduces the study (checked here by retraining in the clone). The MLflow store does not: `python -m initstudy.tracking.importer` rebuilds
it from the run folders (checked here too). A local-directory remote stands in for s3:// or ssh://: the
same commands, another URL (README)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from conftest import dvc, edit_params, python_module, run
from initstudy.runs import rundir
from initstudy.tracking import store

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


# Run-folder files that differ between two machines with the same results (.dvcignore): they stay behind.
STAYS_BEHIND = {"timing.json", "provenance.json", "train.log", ".hydra/hydra.yaml"}


def digest(folder: Path, leave_out: set[str] = frozenset()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and str(p.relative_to(folder)) not in leave_out}  # fmt: skip


@pytest.mark.slow
def test_a_clone_pulls_the_study_and_reproduces_nothing(study_repo: Path, tmp_path: Path):
    repo = study_repo
    edit_params(repo, hydra__sweeper__params={"init": "zeros,he_uniform", "seed": "0"})
    run(dvc("repro", "report"), repo)
    remote = tmp_path / "dvc-remote"
    run(dvc("remote", "add", "-d", "storage", str(remote)), repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "study results"], repo)
    pushed = run(dvc("push", "--with-deps", "report"), repo).stdout
    assert "pushed" in pushed, pushed

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "runs").exists() and not (clone / "data/raw").exists()  # not in git
    # The default study's stages (this test does not run the depth experiment's).
    run(dvc("pull", "--with-deps", "report"), clone)

    # What a stage produced is back: data verified, every run folder complete with all its results.
    assert digest(clone / "data/raw/MNIST/raw") == digest(repo / "data/raw/MNIST/raw")
    manifest = pd.read_csv(clone / "runs/manifest.csv")
    assert len(manifest) == 2
    for entry in manifest.itertuples():
        pulled, trained = clone / "runs" / entry.run_dir, repo / "runs" / entry.run_dir
        assert rundir.is_complete(pulled, entry.identity), entry.run_dir
        assert set(rundir.RESULT_FILES) | {"numerics.json", "config.yaml"} <= set(digest(pulled))
        assert digest(pulled) == digest(trained, leave_out=STAYS_BEHIND)
        assert set(digest(trained)) >= STAYS_BEHIND and not STAYS_BEHIND & set(digest(pulled))

    status = run(dvc("status", "--with-deps", "report"), clone).stdout
    assert "Data and pipelines are up to date" in status, status
    repro = run(dvc("repro", "report"), clone).stdout
    assert "Running stage" not in repro, repro

    # The report, regenerated from the pulled run folders, is the same bytes.
    before = digest(clone / "reports")
    forced = run(dvc("repro", "--force", "--single-item", "report"), clone).stdout
    assert "Running stage 'report'" in forced, forced
    assert digest(clone / "reports") == before == digest(repo / "reports")
    assert "Data and pipelines are up to date" in run(dvc("status", "--with-deps", "report"), clone).stdout

    # MLflow's store stays behind; the run folders rebuild it.
    assert not (clone / "mlflow.db").exists()
    run(python_module("initstudy.tracking.importer"), clone)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("initstudy").experiment_id])
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags[store.RUN_DIR_TAG] for r in children) == sorted(
        f"runs/{d}" for d in manifest.run_dir
    )

    # Reproduced from scratch in the clone (another path, another time, new MLflow run ids), the study hashes
    # to the same dvc.lock: what DVC hashes is what every machine agrees on.
    committed = (clone / "dvc.lock").read_text()
    for entry in manifest.itertuples():
        rundir.remove_owned(clone / "runs" / entry.run_dir)
    retrained = run(dvc("repro", "report"), clone).stdout
    assert "Running stage 'train'" in retrained, retrained
    assert (clone / "dvc.lock").read_text() == committed
    run(["git", "diff", "--exit-code", "--", "dvc.lock", "reports"], clone)
