"""The study's namespace and staging (initstudy.runs.namespace, initstudy.runs.rundir): in a repository whose
study is complete, a try never replaces a study's run folder or rewrites its manifest, a tuning sweep never
writes the study's root, ``init.name`` cannot contradict the chosen option, and an attempt starts in an empty
staging folder of its own. Every case goes through the real entry point and checks the exit status, the one
line, and every existing file and MLflow record."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import REPO, SyntheticMNIST, make_study_repo, python_module, run
from initstudy import __main__ as index
from initstudy.runs import namespace, rundir
from initstudy.train import __main__ as train_entry

# The module's tests share the complete study, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("namespace")

STUDY = [f"runs/{init}/seed_{seed}" for init in ("zeros", "he_uniform") for seed in (0, 1)]


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file under runs/ (the lock aside: a launch that runs takes it), data/, mlflow.db and
    the MLflow artifacts."""
    out = {}
    for top in ("runs", "runs_tune", "data", "mlflow.db", "mlartifacts"):
        base = repo / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            if path.name != rundir.LOCK_NAME:
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def study_files(repo: Path) -> dict[str, str]:
    """The study as the report reads it: its manifest and the run folders it lists."""
    files = [repo / "runs/manifest.csv", *(p for d in STUDY for p in (repo / d).rglob("*") if p.is_file())]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def mlflow_records(repo: Path) -> dict[str, tuple]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    return {
        found.info.run_id: (
            found.info.status,
            found.info.end_time,
            sorted(found.data.metrics.items()),
            sorted(found.data.tags.items()),
        )
        for found in client.search_runs([experiment.experiment_id])
    }


@pytest.fixture(scope="module")
def complete(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A repository whose study is complete: params.yaml's sweep (2 initializers x 2 seeds, 1 epoch) trained
    and logged, runs/manifest.csv listing its four runs."""
    repo = make_study_repo(tmp_path_factory.mktemp("namespace"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", "--multirun"), repo)
    assert len((repo / "runs/manifest.csv").read_text().splitlines()) == 5
    return repo


def refused(repo: Path, monkeypatch, capsys, overrides: list[str]) -> str:
    """``python -m initstudy.train`` in ``repo`` (in process): exit 2 and one line, which is returned."""
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exited:
        train_entry.main(list(overrides))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


TUNE = ["--multirun", "hydra/sweeper=tune", "hydra.sweeper.n_trials=1", "init=he_uniform", "seed=0",
        "optimizer.lr=tag(log,interval(1e-4,1e-1))"]  # fmt: skip

# (overrides, words the one line must contain)
NAMESPACE_CASES = [
    (["init=zeros", "seed=0", "trainer.max_epochs=2"],
     ["run folder runs/zeros/seed_0", "trainer.max_epochs=2", "hydra.run.dir=runs_try/zeros/seed_0",
      "params.yaml", "delete runs/zeros/seed_0"]),
    (["--multirun", "init=zeros,he_uniform", "seed=0,1", "trainer.max_epochs=2", "data.train_size=200"],
     ["run folder runs/zeros/seed_0", "trainer.max_epochs=2 data.train_size=200", "hydra.sweep.dir=runs_try"]),
    (["--multirun", "hydra.sweeper.params.seed=1", "init=he_uniform", "optimizer.lr=0.002"],
     ["run folder runs/he_uniform/seed_1", "optimizer.lr=0.002"]),
    (["hydra.run.dir=runs/zeros/seed_1", "init=he_uniform", "seed=1"],
     ["run folder runs/zeros/seed_1", "hydra.run.dir=runs_try/zeros/seed_1"]),
    (["init=he_uniform", "init.name=zeros"], ["init.name=zeros", "he_uniform", "init=zeros"]),
    (["--multirun", "init=he_uniform", "init.name=zeros", "seed=0,1"], ["init.name=zeros", "he_uniform"]),
    ([*TUNE, "hydra.sweep.dir=runs"], ["tuning sweep", "study's runs/", "hydra.sweep.dir=runs_tune"]),
]  # fmt: skip


@pytest.mark.slow  # the complete study first (4 runs), then one refusal per case, in process
@pytest.mark.parametrize(
    ("overrides", "words"), NAMESPACE_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_a_try_never_replaces_the_study(complete, monkeypatch, capsys, overrides, words):  # fmt: skip
    before, records = snapshot(complete), mlflow_records(complete)
    line = refused(complete, monkeypatch, capsys, overrides)
    for word in words:
        assert word in line, (word, line)
    assert snapshot(complete) == before and mlflow_records(complete) == records
    assert not (complete / "runs/.staging").exists() and not (complete / "runs_tune").exists()


# (staging folder relative to the repo, what is planted there, overrides)
STAGING_CASES = [
    ("runs/.staging/zeros/seed_0", "NOTE.txt", ["--multirun"]),
    ("runs/.staging/he_uniform/seed_1", "keep/", ["--multirun", "hydra/launcher=stacked"]),
    ("runs/.staging/zeros/seed_1", ".hydra/extra.yaml", ["--multirun"]),
    ("runs/zeros/.staging/seed_0", "NOTE.txt", ["init=zeros", "seed=0"]),
    ("runs/he_uniform/.staging/seed_0", ".hydra/extra.yaml", ["init=he_uniform", "seed=0"]),
]


def plant(staging: Path, what: str) -> None:
    """A foreign entry, beside leftovers of an earlier attempt (the contract's own names)."""
    (staging / ".hydra").mkdir(parents=True, exist_ok=True)
    (staging / ".hydra/config.yaml").write_text("leftover: 1\n")
    (staging / "train.log").write_text("a killed attempt\n")
    target = staging / what.rstrip("/")
    if what.endswith("/"):
        (target / "inner").mkdir(parents=True)
    else:
        target.write_text("not the project's\n")


@pytest.mark.slow  # needs the complete study
@pytest.mark.parametrize(("staging", "what", "overrides"), STAGING_CASES, ids=lambda v: str(v))
def test_staging_with_a_foreign_file_is_refused_leaving_every_file(
    complete, monkeypatch, capsys, staging, what, overrides
):
    folder, study = complete / staging, study_files(complete)
    plant(folder, what)
    try:
        before, records = snapshot(complete), mlflow_records(complete)
        line = refused(complete, monkeypatch, capsys, overrides)
        assert f"staging folder {staging} holds {what.rstrip('/')}" in line, line
        assert "did not write" in line
        assert snapshot(complete) == before and mlflow_records(complete) == records
        assert (folder / ".hydra/config.yaml").read_text() == "leftover: 1\n"  # not even our leftovers
    finally:
        parts = Path(staging).parts
        shutil.rmtree(complete.joinpath(*parts[: parts.index(rundir.STAGING) + 1]))
    assert not (complete / "runs/.staging").exists() and study_files(complete) == study


@pytest.mark.slow  # needs the complete study; two real processes
def test_leftovers_of_earlier_attempts_are_cleared_and_only_the_attempts_files_promoted(complete, tmp_path):
    repo = tmp_path / "copy"
    shutil.copytree(complete, repo, symlinks=True)
    leftovers = repo / "runs/.staging/zeros/seed_0"
    leftovers.mkdir(parents=True)
    for name in ("train.log", "metrics.json", ".metrics.json.k1ll3d.tmp", rundir.STAMP):
        (leftovers / name).write_text("from a killed attempt")
    (leftovers / ".hydra").mkdir()
    (leftovers / ".hydra/overrides.yaml").write_text("- stale\n")
    before = study_files(repo)
    run(python_module("initstudy.train", "--multirun"), repo)  # complete: every run skipped
    assert study_files(repo) == before and not (repo / "runs/.staging").exists()

    single = repo / "runs/zeros/.staging/seed_7"
    single.mkdir(parents=True)
    (single / "metrics.json").write_text("from a killed attempt")
    run(python_module("initstudy.train", "init=zeros", "seed=7"), repo)
    promoted = sorted(p.relative_to(repo / "runs/zeros/seed_7").as_posix()
                      for p in (repo / "runs/zeros/seed_7").rglob("*"))  # fmt: skip
    assert promoted == sorted([*rundir.RESULT_FILES, "timing.json", "numerics.json", "provenance.json",
                               rundir.MARKER, rundir.STAMP, "train.log", ".hydra",
                               *(f".hydra/{name}" for name in rundir.HYDRA_FILES)])  # fmt: skip
    assert "killed" not in (repo / "runs/zeros/seed_7/metrics.json").read_text()
    assert study_files(repo) == before


# Launches a finished study lets run, none of which may touch its manifest or run folders: a part of the plan
# (every run complete: skipped), a sweep of other values (its own group level), a tuning sweep (runs_tune).
RUNNING_CASES = [
    (["--multirun", "init=zeros", "seed=0,1"], "left as it is"),
    (
        ["--multirun", "init=zeros", "seed=0", "optimizer.lr=0.002,0.003", "data.train_size=100"],
        "left as it is",
    ),
    ([*TUNE, "data.train_size=100"], "sweep by"),
]


@pytest.mark.slow  # the complete study, then three real launches
def test_a_sweep_that_is_not_the_roots_plan_leaves_its_manifest(complete, tmp_path):
    repo = tmp_path / "copy"
    shutil.copytree(complete, repo, symlinks=True)
    before, records = study_files(repo), mlflow_records(repo)
    for overrides, says in RUNNING_CASES:
        result = run(python_module("initstudy.train", *overrides), repo)
        assert says in result.stdout + result.stderr, overrides
        assert study_files(repo) == before, overrides
    after = mlflow_records(repo)
    assert {run_id: after[run_id] for run_id in records} == records
    assert len(list((repo / "runs").glob("optimizer.lr=*/zeros/seed_0/.complete"))) == 2
    assert len((repo / "runs_tune/manifest.csv").read_text().splitlines()) == 2


def train_examples() -> list[list[str]]:
    """The training examples users are shown: ``initstudy --help`` and docs/training.md's command block, each
    once (both show some of the same commands; running one twice would test nothing more)."""
    block = (REPO / "docs/training.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    lines = [*index.EPILOG.splitlines(), *block.splitlines()]
    examples = (
        tuple(shlex.split(line.split("#")[0].split(prefix, 1)[1]))
        for line in lines
        for prefix in ("initstudy train", "python -m initstudy.train")
        if line.strip().startswith(prefix)
    )
    return [list(example) for example in dict.fromkeys(examples)]


def test_every_example_is_found():
    examples = train_examples()
    assert len(examples) >= 6 and ["init=he_uniform", "seed=3"] in examples
    assert any("hydra.sweep.dir=runs_try" in example for example in examples)


@pytest.mark.slow  # the complete study, then each example (1 epoch, a few hundred images)
def test_the_examples_are_safe_in_a_complete_study(complete, tmp_path):
    repo = tmp_path / "copy"
    shutil.copytree(complete, repo, symlinks=True)
    before, records = study_files(repo), mlflow_records(repo)
    for example in train_examples():
        if "hydra/launcher=joblib" in example:
            continue  # the same jobs as --multirun, in worker processes: covered by test_reliability
        # The synthetic data hold 600 training images (100 held out): the examples' sizes scaled to them.
        example = [a.replace("data.train_size=2000", "data.train_size=200") for a in example]
        result = run(python_module("initstudy.train", *example), repo, check=False)
        assert result.returncode == 0, (example, result.stderr[-3000:])
        assert study_files(repo) == before, example
    after = mlflow_records(repo)  # the study's runs as they were (its parent run resumes with --multirun)
    children = {
        run_id: record for run_id, record in records.items() if "mlflow.parentRunId" in dict(record[3])
    }
    assert len(children) == 4 and {run_id: after[run_id] for run_id in children} == children
    assert len((repo / "runs/manifest.csv").read_text().splitlines()) == 5


# ---- the pieces, fast ------------------------------------------------------------------------------------


def test_a_launch_follows_the_plan_when_it_only_picks_runs_and_how_they_run():
    layout = {"init", "seed", "experiment"}

    def launch(task, hydra=()):
        return namespace.Launch(tuple(task), tuple(hydra), frozenset(layout))

    assert launch([]).is_plan() and launch(["experiment=depth", "logger=offline"]).is_plan()
    assert launch([], ["hydra.mode=MULTIRUN", "hydra/launcher=stacked", "hydra.launcher.n_jobs=4"]).is_plan()
    assert launch(["init=zeros", "seed=0"], ["hydra.mode=RUN"]).follows_plan()  # as Hydra records a run
    assert not launch(["init=zeros", "seed=0"], ["hydra.mode=RUN", "hydra.run.dir=runs/x"]).follows_plan()
    assert launch(["init=zeros,he_uniform", "seed=0,1"]).follows_plan()
    assert not launch(["init=zeros"]).is_plan()  # picks runs: not the root's whole grid
    assert not launch(["trainer.max_epochs=2"]).follows_plan()
    assert not launch(["init=zeros", "+init.bias_std=0.1"]).follows_plan()
    assert not launch([], ["hydra.sweeper.params.seed=0,1,2"]).is_plan()
    assert launch(["init=he_uniform", "optimizer.lr=0.002", "seed=0"]).changed(layout) == [
        "optimizer.lr=0.002"
    ]


def test_a_tuning_sweep_has_a_root_of_its_own(at_repo):
    from initstudy.config.compose import compose_config
    from initstudy.sweep import jobs  # noqa: F401  (registers the resolvers)

    assert compose_config([], return_hydra_config=True).hydra.sweep.dir == "runs"
    assert compose_config(["hydra/sweeper=tune"], return_hydra_config=True).hydra.sweep.dir == "runs_tune"


def test_staging_names_only_the_contracts_files(tmp_path):
    staging = tmp_path / "s"
    (staging / ".hydra").mkdir(parents=True)
    for name in ("train.log", "metrics.json", rundir.MARKER, ".x.abc.tmp"):
        (staging / name).write_text("ours")
    (staging / ".hydra/hydra.yaml").write_text("ours")
    rundir.check_staging(staging)
    (staging / ".hydra/extra.yaml").write_text("theirs")
    (staging / "notes").mkdir()
    (staging / "link").symlink_to(tmp_path)
    assert rundir.foreign_entries(staging) == [".hydra/extra.yaml", "link", "notes/"]
    with pytest.raises(rundir.RunFolderError, match=re.escape("holds .hydra/extra.yaml, link, notes/")):
        rundir.check_staging(staging, "runs/.staging/x")
    with pytest.raises(rundir.RunFolderError, match="did not write"):
        rundir.promote(staging, tmp_path / "final")
    assert not (tmp_path / "final").exists()
    rundir.clear_staging(staging)  # the contract's names go, nothing else
    assert sorted(os.listdir(staging)) == [".hydra", "link", "notes"]
    assert os.listdir(staging / ".hydra") == ["extra.yaml"]
