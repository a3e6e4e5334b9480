"""Everything that could fail at run time is refused before anything runs: one line naming key and value,
exit 2, and runs/, mlflow.db, data/ and reports/ of a repo that already holds a finished study unchanged,
byte for byte. Each case goes through the real entry point (``initstudy.train.__main__.main``), in process for speed;
a few go through a real subprocess too."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, SyntheticMNIST, make_study_repo, python_module, run
from initstudy.train import __main__ as train_entry

# The module's tests share the study repo, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("preflight")


def entry_point_in(repo: Path, monkeypatch: pytest.MonkeyPatch):
    """``python -m initstudy.train`` as started in ``repo``: the Hydra app is made when ``main`` runs, with the
    working directory's study as its config folder."""
    monkeypatch.chdir(repo)
    return train_entry


# (overrides, words the one line must contain). The synthetic data has 600 training images, labels 0-9.
CASES = [
    (["init=foo"], ["'foo'", "allowed", "he_uniform"]),
    (["model.activation=swishy"], ["swishy", "relu", "tanh"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0", "positive integer"]),
    (["trainer.max_epochs=ten"], ["'ten'", "positive integer"]),
    (["data.batch_size=-64"], ["data.batch_size=-64", "positive integer"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "positive number"]),
    (["model.hidden_sizes=[]"], ["model.hidden_sizes", "non-empty list"]),
    (["model.hidden_sizes=[256,abc]"], ["model.hidden_sizes", "'abc'"]),
    (["seed=abc"], ["seed='abc'", "integer"]),
    (["seed=-1"], ["seed=-1", "4294967295"]),
    (["seed=4294967296"], ["seed=4294967296", "4294967295"]),
    (["trainer.max_epoch=3"], ["trainer.max_epoch", "unknown config key"]),
    (["+init.sdt=3"], ["init.sdt", "unknown config key"]),
    (["init.mode=fan_sideways"], ["fan_sideways", "fan_in"]),
    (["data.eval_batch_size=0"], ["data.eval_batch_size=0", "positive integer"]),
    (["data.eval_batch_size=-5"], ["data.eval_batch_size=-5", "positive integer"]),
    (["init=random_normal", "init.std=-0.1"], ["init.std=-0.1", ">= 0"]),
    (["init=random_normal", "init.std=abc"], ["init.std='abc'", "number"]),
    (["init=truncated_normal", "init.mean=true"], ["init.mean=True", "number"]),
    (["init=lsuv", "init.max_iterations=2.5"], ["init.max_iterations=2.5", "integer"]),
    (["init=lsuv", "init.batch_size=1"], ["init.batch_size=1", "integer >= 2"]),
    (["init=lsuv", "init.tolerance=0"], ["init.tolerance=0", "> 0"]),
    (["init=orthogonal", "init.gain=abc"], ["init.gain='abc'", "number"]),
    (
        ["init=orthogonal_critical", "model.activation=gelu"],
        ["model.activation=gelu", "no critical gain", "relu,leaky_relu,tanh,softsign,linear"],
    ),
    (
        ["--multirun", "init=orthogonal_critical", "model.activation=relu,selu"],
        ["model.activation=selu", "no critical gain"],
    ),
    (["init=he_uniform", "init.scale=-2"], ["init.scale=-2", "> 0"]),
    (["trainer.precision=16-mixed"], ["trainer.precision='16-mixed'", "32-true"]),
    (["trainer.precision=bf16"], ["trainer.precision='bf16'", "allowed"]),
    (["numerics.deterministic=maybe"], ["numerics.deterministic='maybe'", "warn"]),
    (["numerics.cpu_capability=avx1024"], ["cpu_capability", "avx2"]),
    (["numerics.num_threads=0"], ["num_threads must be a positive integer"]),
    (["module.stop_on_divergence=sometimes"], ["module.stop_on_divergence='sometimes'", "true or false"]),
    (["trainer.max_epochs=-3"], ["trainer.max_epochs=-3", "positive integer"]),
    (["data.batch_size=0"], ["data.batch_size=0", "positive integer"]),
    (["optimizer.lr=-0.001"], ["optimizer.lr=-0.001", "positive number"]),
    (["model.hidden_sizes=[256,0]"], ["model.hidden_sizes", "positive integer"]),
    (["seed=1.5"], ["seed=1.5", "integer"]),
    (["+trainer.max_epoch=3"], ["trainer.max_epoch", "unknown config key", "max_epochs"]),
    (["trainer.accelerator=gpu"], ["trainer.accelerator='gpu'", "no CUDA device"]),
    (["trainer.accelerator=tpu"], ["trainer.accelerator='tpu'", "auto, cpu"]),
    (["model.num_classes=5"], ["model.num_classes=5", "at least 10"]),
    (["model.input_size=0"], ["model.input_size=0", "positive integer"]),
    (["optimizer.betas=[0.9,1.0]"], ["optimizer.betas", "[0, 1)"]),
    (["optimizer.betas=[0.9]"], ["optimizer.betas", "two numbers"]),
    (["optimizer.eps=0"], ["optimizer.eps=0", "positive number"]),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], ["optimizer.momentum=-0.5", ">= 0"]),
    (["data.train_size=700"], ["data.train_size=700", "600 training images"]),
    (["data.train_size=0"], ["data.train_size=0", "positive integer or null"]),
    (["data.val_size=600"], ["data.val_size=600", "none to train on", "at most 599"]),
    (["data.train_size=550"], ["data.train_size=550", "100 of them held out", "at most 500"]),
    (["data.val_size=-1"], ["data.val_size=-1", ">= 0"]),
    (["data.val_size=0.5"], ["data.val_size", "integer"]),
    (["logger.tracking_uri=postgresql://user:secret@127.0.0.1/db"], ["credentials", "MLFLOW_TRACKING_URI"]),
    (["download.timeout_s=0"], ["download.timeout_s=0"]),
    (["download.sources=[ftp]"], ["download.sources", "ftp"]),
    (["download.sha256.train-images-idx3-ubyte=xyz"], ["download.sha256", "xyz"]),
    (["hydra.run.dir=."], ["the repo root", "runs/<name>"]),
    (["hydra.run.dir=/"], ["ancestor of the repo root"]),
    (["hydra.run.dir=data/raw/x"], ["project's own folder data/"]),
    (["hydra.run.dir=reports"], ["project's own folder reports/"]),
    (["hydra.run.dir=foreign"], ["run folder foreign", "did not write", "canary.txt"]),
    (["hydra.run.dir=link-to-foreign"], ["did not write", "canary.txt"]),
    (["hydra.run.dir=/sys/initstudy-runs"], ["not writable", "/sys"]),
    (["--multirun", "hydra.sweep.dir=foreign"], ["sweep folder foreign", "canary.txt"]),
    (["--multirun", "init=zeros,nope"], ["'nope'", "allowed"]),
    # Lightning's controls (conf/debug, conf/callbacks, the optional Trainer keys: tests/test_lightning_controls.py)
    (["debug=nope"], ["unknown debug 'nope'", "fast_dev_run, tiny"]),
    (["+callbacks=nope"], ["unknown callbacks 'nope'", "checkpoint, early_stopping"]),
    (
        ["+callbacks=early_stopping", "data.val_size=0"],
        ["callbacks.early_stopping.monitor", "data.val_size > 0"],
    ),
    (["trainer.accumulate_grad_batches=2"], ["trainer.accumulate_grad_batches=2", "data.batch_size"]),
    (["init=zeros,he_uniform"], ["--multirun"]),
    (
        [
            "--multirun",
            "hydra/sweeper=tune",
            "init=he_uniform",
            "seed=0",
            "optimizer.lr=interval(1e-4,1e-1)",
            "data.val_size=0",
        ],
        ["data.val_size=0", "test set"],
    ),
    (["--multirun", "optimizer.lr=interval(0.001,0.01)"], ["interval", "hydra/sweeper=tune"]),
    (["--multirun", "optimizer.lr=0.001,0", "seed=0"], ["optimizer.lr=0", "positive number"]),
    (
        ["--multirun", "hydra/sweeper=tune", "optimizer.lr=interval(0.001,0.01)", "trainer.max_epochs=0"],
        ["trainer.max_epochs=0", "positive integer"],
    ),  # a tuning sweep: what every trial shares, up front
    # A tuning sweep's search space, as Optuna's sweeper would build it (initstudy.sweep.search_space).
    *(
        (["--multirun", "hydra/sweeper=tune", "init=he_uniform", "seed=0", f"optimizer.lr={space}"], words)
        for space, words in (
            ("tag(log,interval(0.1,1e-4))", ["optimizer.lr=tag(log,interval(0.1,1e-4))", "low <= high"]),
            ("tag(log,interval(0,0.1))", ["interval(0,0.1)", "low > 0"]),
            ("tag(fog,interval(1e-4,0.1))", ["unknown tag fog", "tag(log"]),
            ("range(1,0)", ["optimizer.lr=range(1,0)", "start <= stop"]),
            ("shuffle(range(1,0))", ["shuffle(range(1,0))", "no value"]),
        )
    ),
    # A tracking URI: a scheme MLflow knows, a driver that is installed, a server that answers (at once, not
    # after MLflow's minutes of retries).
    (
        ["logger.tracking_uri=postgresql://127.0.0.1:1/db"],
        ["postgresql://127.0.0.1:1/db", "'psycopg'", "postgresql+psycopg2://"],
    ),
    (
        ["logger.tracking_uri=postgresql+psycopg2://127.0.0.1:1/db"],
        ["127.0.0.1:1", "no database server answers"],
    ),
    (["logger.tracking_uri=mysql://127.0.0.1/db"], ["mysql://127.0.0.1/db", "'MySQLdb'", "install"]),
    (["logger.tracking_uri=postgress://127.0.0.1/db"], ["unknown scheme 'postgress'", "sqlite:///"]),
    (["logger.tracking_uri=postgresql+nope://127.0.0.1/db"], ["postgresql+nope://", "not a database URL"]),
]


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file under runs/, data/, reports/, mlflow.db and the foreign folder."""
    out = {}
    for top in ("runs", "data", "reports", "foreign", "mlflow.db"):
        base = repo / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_repo(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A repo holding a finished one-run study (runs/, mlflow.db, reports/) and a foreign folder."""
    repo = make_study_repo(tmp_path_factory.mktemp("preflight"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", "--multirun", "init=he_uniform", "seed=0"), repo)
    run(python_module("initstudy.report"), repo)
    (repo / "foreign/.git").mkdir(parents=True)
    (repo / "foreign/canary.txt").write_text("not the project's")
    (repo / "link-to-foreign").symlink_to(repo / "foreign")
    return repo


@pytest.mark.slow  # a trained sweep, then the CLI once per bad input: 71 cases
@pytest.mark.parametrize(
    ("overrides", "words"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_input_is_one_line_and_touches_nothing(finished_repo, monkeypatch, capsys, overrides, words):
    entry = entry_point_in(finished_repo, monkeypatch)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = snapshot(finished_repo)
    with pytest.raises(SystemExit) as exited:
        entry.main(list(overrides))
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(finished_repo) == before
    assert not (finished_repo / "sys").exists() and not (finished_repo / "runs/.staging").exists()


@pytest.mark.slow  # needs the trained sweep of finished_repo
def test_damaged_mlflow_store_is_refused_before_anything_runs(finished_repo, tmp_path, monkeypatch, capsys):
    store = tmp_path / "damaged.db"
    store.write_bytes(b"this is not a database" * 100)
    entry = entry_point_in(finished_repo, monkeypatch)
    before = snapshot(finished_repo)
    with pytest.raises(SystemExit) as exited:
        entry.main(["init=zeros", f"logger.tracking_uri=sqlite:///{store}"])
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a readable SQLite database" in lines[0], lines
    assert snapshot(finished_repo) == before and store.read_bytes() == b"this is not a database" * 100


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["data.eval_batch_size=0"], ["hydra.run.dir=foreign"]])
def test_real_process_exits_2_with_one_line_and_no_traceback(finished_repo, overrides):
    before = snapshot(finished_repo)
    result = run(python_module("initstudy.train", *overrides), finished_repo, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(finished_repo) == before
    assert os.listdir(finished_repo / "foreign") == [".git", "canary.txt"] or sorted(
        os.listdir(finished_repo / "foreign")
    ) == [".git", "canary.txt"]


def test_help_answers_from_the_configs_alone_whatever_the_repo_holds(tmp_path):
    """Hydra's help walks its primary config folder; the repo root holds .venv/, runs/ and data/."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "conf", repo / "conf")
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")
    for top in (".venv/lib/site-packages", "runs/he_uniform", "data/raw"):
        for i in range(300):
            folder = repo / top / f"d{i}"
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text("a: 1\n")
    result = run(python_module("initstudy.train", "--help"), repo, timeout=120)
    assert "init: gaussian, glorot_normal, glorot_uniform" in result.stdout
    for walked in (".venv", "runs", "data/raw"):
        assert f"\n{walked}" not in result.stdout and f"{walked}/" not in result.stdout, walked
