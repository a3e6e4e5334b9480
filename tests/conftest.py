"""Shared fixtures: tiny synthetic MNIST (learnable, a few hundred images) and throw-away study repos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import services
from initstudy.config import numerics
from initstudy.data.synthetic import SyntheticMNIST, make_synthetic

REPO = Path(__file__).resolve().parents[1]
# The test session is a job process too: tests that train in-process run under the study's default profile,
# whose environment must be in place before torch is imported (by any test module).
numerics.apply_before_torch(numerics.load("portable", REPO))
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# What a study repo needs to run: the tracked configuration and code (src/ for DVC's dependency hashes).
REPO_ITEMS = (
    "params.yaml",
    "dvc.yaml",
    "conf",
    "src/initstudy",
    "src/hydra_plugins",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
)


# The group whose tests start SLURM and PostgreSQL (tests/test_slurm.py, test_mlflow_server.py, the PostgreSQL
# case of test_mlflow_ui.py): one worker runs it all, and it waits the longest (a SLURM time limit is a minute).
SERVICES_GROUP = "services"


def start_rank(item: pytest.Item) -> int:
    """When a test's work unit should start under `--dist loadgroup`: the services group first (the longest unit
    one worker must run alone), then the end-to-end tests (and so the groups that hold them), the unit tests
    last, where their seconds fill the workers' ends instead of a long test starting last."""
    group = item.get_closest_marker("xdist_group")
    if group is not None and (group.args or [group.kwargs.get("name")])[0] == SERVICES_GROUP:
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first (a stable sort: each module keeps its own order). pytest-xdist schedules the work units in
    the order of their first test, the same order on every worker; no test depends on another's having run."""
    items.sort(key=start_rank)


@pytest.fixture
def at_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory at the repository root, as the study's commands run: params.yaml's
    hydra.searchpath (file://conf) is relative to it; $INITSTUDY_ROOT unset, so the root is the cwd."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("INITSTUDY_ROOT", raising=False)
    return REPO


@pytest.fixture(scope="session")
def synthetic_mnist() -> SyntheticMNIST:
    return make_synthetic()


def edit_params(repo: Path, **sections: object) -> dict:
    """Set values in repo/params.yaml like a user's edit; ``a__b=v`` sets the nested key ``a.b``."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in sections.items():
        node = params
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600, env: dict | None = None):
    """Run a command as a user would; the tests' MLflow store is the study repo's own unless ``env`` says."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment.update({"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})
    # As with an activated venv: DVC stage commands say `python`, which must be this interpreter.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


@pytest.fixture
def study_root(tmp_path: Path, synthetic_mnist: SyntheticMNIST, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The study's configs and synthetic data as the working directory and INITSTUDY_ROOT (no git, no DVC):
    for tests that train in-process through initstudy.train.runner or initstudy.stacked."""
    root = tmp_path / "root"
    root.mkdir()
    for item in ("params.yaml", "dvc.yaml", "conf"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy2
        copy(REPO / item, root / item)
    synthetic_mnist.write(root / "data" / "MNIST" / "raw")
    monkeypatch.chdir(root)
    monkeypatch.setenv("INITSTUDY_ROOT", str(root))
    return root


@pytest.fixture
def study_repo(request: pytest.FixtureRequest, tmp_path: Path, synthetic_mnist: SyntheticMNIST) -> Path:
    """A git + DVC repo with this project's configuration, tiny synthetic MNIST in a local source folder, and
    a tiny default study: 2 initializers x 2 seeds, 1 epoch. Nothing is downloaded. Runs log no model unless
    the test is marked ``log_model``."""
    return make_study_repo(
        tmp_path, synthetic_mnist, log_model=request.node.get_closest_marker("log_model") is not None
    )


def copy_study(study: Path, tmp_path: Path) -> Path:
    """A private copy of a module-scoped study (links kept), for a test that may damage or kill it."""
    copy = tmp_path / "study"
    shutil.copytree(study, copy, symlinks=True)
    return copy


def set_options(path: Path, **values: object) -> None:
    """Set top-level keys of a config group's option file (a study repo's copy)."""
    option = yaml.safe_load(path.read_text())
    option.update(values)
    path.write_text(yaml.safe_dump(option, sort_keys=False))


def make_study_repo(tmp_path: Path, synthetic_mnist: SyntheticMNIST, log_model: bool = False) -> Path:
    """What ``study_repo`` builds, for fixtures of a wider scope. ``log_model``: each run logs its network as an
    MLflow model, the study's default (conf/logger/mlflow.yaml); off, the tests that read no model save that
    step's time in every run (results are the same: the option is outside a run's identity)."""
    repo = tmp_path / "study"
    for item in REPO_ITEMS:
        source, target = REPO / item, repo / item
        if not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    local = synthetic_mnist.write(tmp_path / "mnist-local", compress=True)
    set_options(repo / "conf/download/default.yaml", sources=["local"], local_dir=str(local),
                sha256=synthetic_mnist.sha256)  # fmt: skip
    if not log_model:
        set_options(repo / "conf/logger/mlflow.yaml", log_model=False)
    edit_params(
        repo,
        trainer__max_epochs=1,
        data__batch_size=32,
        data__val_size=100,  # of the 600 synthetic training images
        hydra__sweeper__params={"init": "zeros,he_uniform", "seed": "0,1"},
    )
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "study"], repo)
    return repo


@pytest.fixture
def synthetic_data_repo(study_repo: Path, synthetic_mnist: SyntheticMNIST) -> Path:
    """``study_repo`` with the synthetic IDX files already in data/raw/MNIST/raw (no download stage needed)."""
    synthetic_mnist.write(study_repo / "data/raw/MNIST/raw")
    return study_repo


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A study repo holding one finished run, runs/he_uniform/seed_0 (1 epoch, 200 training images), logged to
    its MLflow store: what `initstudy evaluate` / `predict` and the MLflow model tests read (one per module)."""
    repo = make_study_repo(tmp_path_factory.mktemp("trained"), synthetic_mnist, log_model=True)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", "init=he_uniform", "seed=0", "trainer.max_epochs=1",
                      "data.train_size=200"), repo)  # fmt: skip
    return repo


@pytest.fixture
def slurm_cluster() -> Iterator[services.SlurmCluster]:
    """A real one-node SLURM cluster (munge, slurmctld, slurmd) on loopback, gone after the test."""
    with services.local_slurm() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[services.MlflowServer]:
    """A real MLflow server on a real PostgreSQL database, on loopback, shared by the session's tests."""
    with services.mlflow_postgres_server() as server:
        yield server


def load_script(path: Path):
    """A script outside the package (benchmarks/) as a module, to test its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
