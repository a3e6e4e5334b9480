"""One line for every error class, through the real entry points: exit status non-zero, exactly one line on
stderr naming the value and what is allowed, no traceback, every existing file unchanged. The bad config
values, search spaces and tracking URIs are tabled in test_preflight.py; here the classes that need a real
process: a params.yaml or dvc.yaml that does not parse (`make study`, before DVC), a database driver that is
not installed, a full disk, a damaged import source."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SyntheticMNIST, make_study_repo, python_module, run

# The module's tests share the study repos, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("one_line_errors")

# DVC's own scratch folder (git-ignored): DVC makes it in a repository the first time anything opens it, as
# the run identity does (DVC reads dvc.yaml for it); in a study DVC has run, it is already there.
DVC_SCRATCH = Path(".dvc/tmp")


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and DVC_SCRATCH not in p.relative_to(folder).parents}  # fmt: skip


MAKE_FAILED = re.compile(r"^make(\[\d+\])?: \*\*\* ")


def one_line(result: subprocess.CompletedProcess, *words: str, foreign: re.Pattern[str] | None = None) -> str:
    """The process failed with one line on stderr (besides ``foreign`` lines of another program's), holding
    every word."""
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and not (foreign and foreign.match(line))
    ]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ---- make study: the YAML files DVC parses first ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        (
            "params.yaml",
            "defaults:\n  - init: zeros\n seed: [0\n",
            ["params.yaml", "line 3", "not valid YAML"],
        ),
        ("params.yaml", "- a\n- list\n", ["params.yaml", "YAML mapping", "list"]),
        ("dvc.yaml", "stages:\n  train:\n   cmd: [x\n", ["dvc.yaml", "not valid YAML", "line"]),
    ],
)
def test_make_study_refuses_a_yaml_file_that_does_not_parse_before_dvc_runs(tmp_path, name, text, words):
    repo = tmp_path / "study"
    repo.mkdir()
    for item in ("Makefile", "params.yaml", "dvc.yaml", "conf"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy2)(REPO / item, repo / item)
    (repo / name).write_text(text)
    before = files(repo)
    venv = Path(sys.executable).parents[1]  # the installed environment: `install` is not remade (-o)
    result = run(["make", "-o", "install", "study", f"VENV={venv}"], repo, check=False)
    # make names the failed target on a line of its own ("make[1]: ***" when make runs under make, as in make test)
    one_line(result, *words, foreign=MAKE_FAILED)
    assert files(repo) == before and not (repo / ".dvc").exists()


# ---- a study repo (synthetic data, no runs) for the training entry point ----------------------------------


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    repo = make_study_repo(tmp_path_factory.mktemp("oneline"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    return repo


@pytest.mark.slow
def test_a_database_driver_that_is_not_installed_is_named(bare_repo: Path, tmp_path: Path):
    hidden = tmp_path / "hide/psycopg2"  # psycopg2 made unimportable, as on a machine without it
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg2'\", name='psycopg2')\n"
    )
    before = files(bare_repo)
    result = run(
        python_module("initstudy.train", "init=zeros", "seed=0"),
        bare_repo,
        check=False,
        env={
            "PYTHONPATH": f"{hidden.parent}:{REPO / 'src'}",
            "MLFLOW_TRACKING_URI": "postgresql+psycopg2://127.0.0.1/db",
        },
    )
    one_line(result, "postgresql+psycopg2://127.0.0.1/db", "'psycopg2'", "not installed")
    assert result.returncode == 2 and files(bare_repo) == before


# ---- a full disk: a real one, a tiny tmpfs in a private mount namespace -----------------------------------


def on_full_disk(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python args`` with ``repo/full`` a 96 KiB tmpfs already 90 KiB full (user + mount namespace: no root
    needed where unprivileged namespaces are allowed; skipped elsewhere)."""
    if shutil.which("unshare") is None or run(["unshare", "-rm", "true"], repo, check=False).returncode:
        pytest.skip("unshare -rm (an unprivileged mount namespace) is not available here")
    (repo / "full").mkdir(exist_ok=True)
    fill = (
        "mount -t tmpfs -o size=96k tmpfs full && dd if=/dev/zero of=full/filler bs=1k count=90 2>/dev/null"
    )
    command = " ".join([fill, "&& exec", sys.executable, *args])
    return run(
        ["unshare", "-rm", "sh", "-c", command], repo, check=False, env={"PYTHONPATH": str(REPO / "src")}
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["-m", "initstudy.diagnose", "--out", "full/diagnostics"],
        ["-m", "initstudy.train", "init=zeros", "seed=0", "hydra.run.dir=full/run", "logger=offline"],
        [
            "-m",
            "initstudy.train",
            "--multirun",
            "init=zeros",
            "seed=0",
            "hydra.sweep.dir=full/sweep",
            "logger=offline",
        ],
    ],
    ids=["diagnose", "train", "sweep"],
)
def test_a_full_disk_is_one_line(bare_repo: Path, args: list[str]):
    before = files(bare_repo)
    result = on_full_disk(bare_repo, *args)
    line = one_line(result, "no space left on the device", "write elsewhere")
    assert "full/" in line, line  # the file, or the folder Hydra was writing its own files into
    assert files(bare_repo) == before


# ---- a damaged source of `python -m initstudy.tracking.importer` ------------------------------------------


@pytest.fixture(scope="module")
def offline_repo(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """One complete run trained with logger=offline, not yet imported."""
    repo = make_study_repo(tmp_path_factory.mktemp("import"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", "--multirun", "init=he_uniform", "seed=0", "logger=offline"), repo)
    assert not (repo / "mlflow.db").exists()
    return repo


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damaged", "text", "words"),
    [
        ("manifest.csv", '"unclosed\n', ["runs/manifest.csv", "not a readable manifest"]),
        ("he_uniform/seed_0/config.yaml", "a: [1\n", ["config.yaml", "not readable YAML"]),
        ("he_uniform/seed_0/config.yaml", "- a list\n", ["config.yaml", "YAML mapping", "list"]),
        ("he_uniform/seed_0/metrics.json", "{not json", ["metrics.json", "not valid JSON"]),
        ("he_uniform/seed_0/history.csv", "\0\0", ["history.csv", "lacks column(s)"]),
        ("he_uniform/seed_0/history.csv", "epoch,step,metric,value\n0,0,x,lots\n", ["history.csv", "'lots'"]),
    ],
)
def test_a_damaged_import_source_is_one_line_and_nothing_is_imported(
    offline_repo: Path, tmp_path: Path, damaged: str, text: str, words: list[str]
):
    repo = tmp_path / "study"
    shutil.copytree(offline_repo, repo, symlinks=True)
    (repo / "runs" / damaged).write_text(text)
    before = files(repo)
    result = run(python_module("initstudy.tracking.importer"), repo, check=False)
    one_line(result, *words)
    assert files(repo) == before and not (repo / "mlflow.db").exists()
