"""The study through a DVC remote: push after `dvc repro`, then a fresh `git clone` + a plain `dvc pull` holds
every output dvc.lock names (the data and the run folders of every chain), `dvc repro` has nothing to do, and
the report regenerates there byte for byte.

What travels (dvc.yaml, .dvcignore): the verified MNIST files and the run folders' machine-independent files
(results, weights, resolved config, numerics settings, completion marker); the reports and diagnostics travel in
git. Timings, logs and provenance stay on the machine that trained (and in its MLflow store), which is what keeps
dvc.lock the same on every machine that reproduces the study (checked here by retraining in the clone). The
MLflow store does not: `python -m initstudy.tracking.importer` rebuilds it from the run folders (checked here
too). The remote is a local folder here and, in the second test, a real OpenSSH server on loopback: the same
commands, another URL (docs/cluster.md).

`dvc push` sends only what the local cache holds and says so only in a warning (exit 0): a push from a
workspace that lacks some output dvc.lock names (one chain reproduced, the others' lock entries committed from
elsewhere) leaves a remote that a plain `dvc pull` fails on. `dvc data status --not-in-remote` names what is
missing; checked here both ways."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import services
from conftest import copy_study, dvc, edit_params, make_study_repo, python_module, run
from initstudy.runs import rundir
from initstudy.tracking import store

# Both round trips share every_chain (a module-scoped fixture, the longest to build): one worker runs them
# (`make test`: --dist loadgroup), so that every_chain is built once.
pytestmark = pytest.mark.xdist_group("dvc_remote")

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
# The stages that train, beyond the default chain's `train`: with `download` and `train`, every stage whose
# outputs DVC caches (the rest are `cache: false` and travel in git).
OTHER_TRAININGS = (
    "train_depth",
    "train_glorot2010",
    "train_he2015",
    "train_schoenholz2017",
    "train_saxe2014",
    "train_notebook",
    "train_epsilon",
    "train_width",
    "train_lr_grid",
    "train_tuned",
)
OTHER_RUNS = {f"runs_{stage.removeprefix('train_')}/" for stage in OTHER_TRAININGS}
CACHED = {"data/raw/MNIST/raw/", "runs/", *OTHER_RUNS}

# Run-folder files that differ between two machines with the same results (.dvcignore): they stay behind.
STAYS_BEHIND = {"timing.json", "provenance.json", "train.log", ".hydra/hydra.yaml"}


def digest(folder: Path, leave_out: set[str] = frozenset()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and str(p.relative_to(folder)) not in leave_out}  # fmt: skip


def machine_only(name: str) -> bool:
    """A file that .dvcignore keeps out of DVC's hashes, and so off the remote: ``name`` is relative to an
    output folder."""
    return name in {"multirun.yaml", ".initstudy.lock"} or name.endswith(tuple(f"/{n}" for n in STAYS_BEHIND))


def data_status(repo: Path, *args: str) -> dict:
    """`dvc data status --json`: which tracked outputs are missing from the cache (and the remote)."""
    return json.loads(run(dvc("data", "status", "--json", *args), repo).stdout)


def shrink_presets(repo: Path) -> None:
    """Each other chain's preset (conf/experiment/) cut to the first cell of its sweep: one run of 1 epoch, 16
    units wide, on the synthetic data's 600 training images."""
    for stage in OTHER_TRAININGS:
        path = repo / "conf/experiment" / f"{stage.removeprefix('train_')}.yaml"
        preset = yaml.safe_load(path.read_text())
        if preset["model"].get("width") is not None:  # the notebook's preset names its layers instead
            preset["model"]["width"] = 16
        preset["data"] = {**(preset.get("data") or {}), "train_size": 256, "val_size": 100}
        preset["trainer"] = {**preset["trainer"], "max_epochs": 1}
        sweep = preset["hydra"]["sweeper"]["params"]
        sweep.update({key: str(values).split(",")[0] for key, values in sweep.items()})
        path.write_text("# @package _global_\n" + yaml.safe_dump(preset, sort_keys=False))


@pytest.fixture(scope="module")
def every_chain(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist) -> Path:
    """A tiny study in which every stage that caches an output has run, so dvc.lock names them all: the default
    chain to its report (2 initializers x 1 seed) and one run of each other chain's training. Committed."""
    repo = make_study_repo(tmp_path_factory.mktemp("chains"), synthetic_mnist)
    edit_params(repo, hydra__sweeper__params={"init": "zeros,he_uniform", "seed": "0"})
    shrink_presets(repo)
    run(dvc("repro", "report", *OTHER_TRAININGS), repo, timeout=1800)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "study results"], repo)
    return repo


def assert_pulled_everything(clone: Path, repo: Path) -> None:
    """Every output dvc.lock names is in the clone, each with as many files as dvc.lock counts, each file
    byte-identical to the one that was trained; the machine-only files stayed behind."""
    assert data_status(clone) == {}, data_status(clone)  # nothing missing, nothing changed
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outs = [out for stage in lock["stages"].values() for out in stage.get("outs", [])]
    counted = {out["path"] + "/": out.get("nfiles") for out in outs}  # folders: how many files
    for path in CACHED:
        pulled = digest(clone / path)
        assert len(pulled) == counted[path], path
        trained = digest(repo / path)
        assert pulled == {name: trained[name] for name in pulled}, path
        stayed = set(trained) - set(pulled)
        assert all(machine_only(name) for name in stayed), (path, stayed)


def test_the_round_trip_covers_every_stage_that_trains():
    """A training stage left out of OTHER_TRAININGS would never be pushed, pulled or compared here."""
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    assert {name for name in stages if name.startswith("train_")} == set(OTHER_TRAININGS)


@pytest.mark.slow
def test_a_plain_pull_restores_every_output_and_reproduces_nothing(every_chain: Path, tmp_path: Path):
    repo = copy_study(every_chain, tmp_path)
    remote = tmp_path / "dvc-remote"
    run(dvc("remote", "add", "-d", "storage", str(remote)), repo)
    run([*GIT, "commit", "-qam", "DVC remote"], repo)

    # One chain pushed: DVC says nothing is wrong, and `dvc data status --not-in-remote` names the rest.
    run(dvc("push", "--with-deps", "report"), repo)
    assert {*data_status(repo, "--not-in-remote")["not_in_remote"]} == OTHER_RUNS
    # The documented push: everything dvc.lock names.
    pushed = run(dvc("push"), repo)
    assert "pushed" in pushed.stdout and "Missing cache files" not in pushed.stderr, pushed
    assert data_status(repo, "--not-in-remote") == {}

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert {*data_status(clone)["not_in_cache"]} == CACHED  # not in git: every cached output dvc.lock names
    run(dvc("pull"), clone)
    assert_pulled_everything(clone, repo)

    # What a stage produced is back: every run folder complete with all its results.
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
    forced = run(dvc("repro", "-f", "-s", "report"), clone).stdout  # as docs/cluster.md shows it
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


@pytest.mark.slow
def test_a_plain_pull_over_ssh_restores_every_output(every_chain: Path, tmp_path: Path):
    """The remote on a real OpenSSH server (loopback, key login) as docs/cluster.md sets it up: URL and port
    committed in .dvc/config, user and key file in each clone's .dvc/config.local (never committed)."""
    repo = copy_study(every_chain, tmp_path)
    with services.loopback_sshd() as sshd:
        run(dvc("remote", "add", "-d", "storage", f"ssh://127.0.0.1{sshd.folder}/initstudy-dvc"), repo)
        run(dvc("remote", "modify", "storage", "port", str(sshd.port)), repo)
        login = [("user", sshd.user), ("keyfile", str(sshd.keyfile))]  # each person's own: --local
        for option, value in login:
            run(dvc("remote", "modify", "--local", "storage", option, value), repo)
        run([*GIT, "commit", "-qam", "DVC remote over SSH"], repo)
        committed = run(["git", "show", "HEAD:.dvc/config"], repo).stdout
        assert f"port = {sshd.port}" in committed and str(sshd.keyfile) not in committed, committed

        pushed = run(dvc("push"), repo)
        assert "pushed" in pushed.stdout and "Missing cache files" not in pushed.stderr, pushed
        assert data_status(repo, "--not-in-remote") == {}
        assert (sshd.folder / "initstudy-dvc/files/md5").is_dir()  # on the server's side of the connection

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        for option, value in login:
            run(dvc("remote", "modify", "--local", "storage", option, value), clone)
        run(dvc("pull"), clone)
        assert_pulled_everything(clone, repo)
