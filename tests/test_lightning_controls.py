"""Lightning's usual controls through config groups: ``debug=fast_dev_run`` / ``debug=tiny`` (conf/debug),
``+callbacks=checkpoint`` / ``early_stopping`` (conf/callbacks) and the optional Trainer keys. The default
config must hash exactly as the committed study's runs do; everything these controls change is part of a run's
identity; a smoke test keeps nothing; a study's folders are never touched. End to end through
``python -m initstudy.train`` on tiny synthetic data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SyntheticMNIST, make_study_repo, python_module, run
from initstudy.config.compose import compose_config, config_hash
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.nn import weights
from initstudy.runs import rundir

# The module's tests share the trained study, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("lightning_controls")

# config_hash of two runs of the committed study, as runs/manifest.csv records them (column config_hash): the
# default composition must keep hashing to them, so that the committed runs stay the study's.
COMMITTED_HASHES = {
    ("zeros", 0): "4501f7c2db46ca92fbbaeab85dd69ffcc53f27fbad1f515c41487770d49cd082",
    ("he_uniform", 4): "4d643438425816fd11b54eec0f15d00d4ae1a11b4aac1ad369686a505315f035",
}


# ---- composition, identity, validation (fast) ----------------------------------------------------------------


@pytest.mark.usefixtures("at_repo")
@pytest.mark.parametrize(("init", "seed"), list(COMMITTED_HASHES))
def test_the_default_config_hashes_as_the_committed_runs(init, seed):
    cfg = compose_config([f"init={init}", f"seed={seed}"])
    assert config_hash(cfg) == COMMITTED_HASHES[(init, seed)]
    assert "callbacks" not in cfg  # no new key when the groups are not chosen
    assert set(cfg.trainer) == {"_target_", "max_epochs", "accelerator", "log_every_n_steps", "precision"}


@pytest.mark.usefixtures("at_repo")
def test_every_control_is_part_of_the_identity():
    base = ["init=zeros", "seed=0"]
    variants = [
        ["+callbacks=checkpoint"],
        ["+callbacks=early_stopping"],
        ["+callbacks=[checkpoint,early_stopping]"],
        ["+callbacks=early_stopping", "callbacks.early_stopping.patience=1"],
        ["debug=fast_dev_run"],
        ["debug=tiny"],
        ["trainer.gradient_clip_val=1.0"],
        ["trainer.gradient_clip_val=1.0", "trainer.gradient_clip_algorithm=value"],
        ["trainer.limit_train_batches=2"],
        ["trainer.limit_train_batches=2", "data.steps_per_chunk=4"],
        ["trainer.limit_test_batches=0.5"],
    ]
    hashes = {
        config_hash(compose_config(base)),
        *(config_hash(compose_config([*base, *v])) for v in variants),
    }
    assert len(hashes) == len(variants) + 1
    # steps_per_chunk is a speed knob, unless the Trainer counts batches (a batch is a chunk of steps).
    assert config_hash(compose_config([*base, "data.steps_per_chunk=4"])) == COMMITTED_HASHES[("zeros", 0)]


@pytest.mark.usefixtures("at_repo")
@pytest.mark.parametrize(
    "overrides",
    [["debug=fast_dev_run"], ["debug=tiny"], ["+callbacks=[checkpoint,early_stopping]"],
     ["trainer.gradient_clip_val=0.5", "trainer.limit_train_batches=0.5", "trainer.limit_test_batches=3"]],
)  # fmt: skip
def test_every_option_composes_and_validates(overrides):
    validate(compose_config(overrides))


@pytest.mark.usefixtures("at_repo")
def test_debug_runs_land_in_a_root_of_their_own():
    for option in ("fast_dev_run", "tiny"):
        hydra = compose_config([f"debug={option}", "init=zeros", "seed=1"], return_hydra_config=True).hydra
        assert hydra.run.dir == "runs_debug/zeros/seed_1" and hydra.sweep.dir == "runs_debug", option


# (overrides, words of the one line)
REFUSED = [
    (["+callbacks=bogus"], ["unknown callbacks 'bogus'", "checkpoint", "early_stopping"]),
    (["debug=bogus"], ["unknown debug 'bogus'", "fast_dev_run", "tiny"]),
    (["+callbacks=early_stopping", "data.val_size=0"], ["callbacks.early_stopping.monitor", "data.val_size > 0"]),
    (["+callbacks=checkpoint", "callbacks.checkpoint.monitor=test/acc"], ["'test/acc'", "val/loss, val/acc"]),
    (["+callbacks=checkpoint", "+callbacks.checkpoint.dirpath=elsewhere"], ["callbacks.checkpoint.dirpath"]),
    (["+callbacks=early_stopping", "+callbacks.early_stopping.patients=2"], ["patients", "patience"]),
    (["trainer.accumulate_grad_batches=4"], ["trainer.accumulate_grad_batches=4", "data.batch_size"]),
    (["trainer.limit_val_batches=2"], ["trainer.limit_val_batches=2", "data.val_size"]),
    (["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0", "(0, 1]"]),
    (["trainer.limit_train_batches=1.5"], ["trainer.limit_train_batches=1.5", "(0, 1]"]),
    (["trainer.fast_dev_run=-1"], ["trainer.fast_dev_run=-1", "positive integer"]),
    (["trainer.gradient_clip_val=0"], ["trainer.gradient_clip_val=0", "positive number"]),
    (["trainer.gradient_clip_algorithm=l2"], ["'l2'", "norm or value"]),
    (["trainer.devices=2"], ["trainer.devices=2", "not a config value"]),
    (["trainer.max_epoch=3"], ["unknown config key 'trainer.max_epoch'", "max_epochs", "gradient_clip_val"]),
    (["+debug=tiny"], ["debug"]),
]  # fmt: skip


@pytest.mark.usefixtures("at_repo")
@pytest.mark.parametrize(
    ("overrides", "words"), REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_a_bad_control_is_one_line(overrides, words):
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(overrides))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_checkpoints_are_the_run_folders_own(tmp_path):
    """``checkpoints/*.ckpt`` is promoted with the run and deleted with it; anything else there is foreign."""
    staging = tmp_path / ".staging" / "seed_0"
    rundir.begin_attempt(staging)
    (staging / rundir.CHECKPOINTS).mkdir()
    (staging / rundir.CHECKPOINTS / "last.ckpt").write_bytes(b"weights")
    assert rundir.foreign_entries(staging) == []
    final = tmp_path / "seed_0"
    rundir.promote(staging, final)
    assert (final / rundir.CHECKPOINTS / "last.ckpt").read_bytes() == b"weights"
    assert rundir.is_project_run_folder(final)
    (final / rundir.CHECKPOINTS / "notes.txt").write_text("mine")
    assert rundir.foreign_entries(final) == [f"{rundir.CHECKPOINTS}/notes.txt"]
    assert not rundir.remove_owned(final)  # the foreign file and its folders stay
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == [
        "checkpoints",
        "checkpoints/notes.txt",
    ]


# ---- end to end: a complete study, then each control beside it ------------------------------------------------


def study_files(repo: Path, store: bool = False) -> dict[str, str]:
    """Every file of the study's root (runs/, the lock aside) by content; with ``store``, the MLflow store too
    (a run that is logged adds to it)."""
    out = {}
    paths = [p for p in (repo / "runs").rglob("*") if p.is_file() and p.name != rundir.LOCK_NAME]
    for path in sorted([*paths, *([repo / "mlflow.db"] if store else [])]):
        out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def mlflow_run_count(repo: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initstudy")
    return len(client.search_runs([experiment.experiment_id]))


@pytest.fixture(scope="module")
def study(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """A repository whose study is complete: 2 initializers x 2 seeds, 1 epoch, logged to MLflow."""
    repo = make_study_repo(tmp_path_factory.mktemp("controls"), synthetic_mnist)
    synthetic_mnist.write(repo / "data/raw/MNIST/raw")
    run(python_module("initstudy.train", "--multirun"), repo)
    return repo


@pytest.mark.slow  # the study (4 runs), then one smoke test and a stacked sweep of smoke tests
def test_fast_dev_run_keeps_nothing_and_leaves_the_study(study):
    before, runs_before = study_files(study, store=True), mlflow_run_count(study)
    single = run(python_module("initstudy.train", "debug=fast_dev_run", "init=zeros", "seed=0"), study)
    said = single.stdout + single.stderr
    assert "fast_dev_run" in said and "nothing kept" in said, said[-2000:]
    sweep = run(
        python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", "debug=fast_dev_run"), study
    )
    said = sweep.stdout + sweep.stderr
    assert said.count("nothing kept") == 4 and said.count("trains alone: trainer.fast_dev_run=True") == 4, (
        said
    )
    assert study_files(study, store=True) == before and mlflow_run_count(study) == runs_before
    debug = study / "runs_debug"
    assert not list(debug.rglob(rundir.MARKER)) and not (debug / rundir.MANIFEST).exists()
    assert not list(debug.rglob("*.pt")) and not (debug / rundir.STAGING).exists()


@pytest.mark.slow  # the study, then a tiny run beside it
def test_tiny_profile_completes_a_run_of_its_own(study):
    before = study_files(study)
    overrides = ["debug=tiny", "init=he_uniform", "seed=0", "data.train_size=200", "data.val_size=100",
                 "data.eval_batch_size=50"]  # fmt: skip
    run(python_module("initstudy.train", *overrides), study)
    folder = study / "runs_debug/he_uniform/seed_0"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert rundir.read_marker(folder) is not None and metrics["epochs_completed"] == 1
    # 200 images in batches of 32: 7 steps; the test pass: the first batch of 50 of the 200 test images.
    assert metrics["steps_completed"] == 7
    assert np.load(folder / rundir.PREDICTIONS).shape == (2, 50)
    assert yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["limit_test_batches"] == 1
    assert study_files(study) == before


@pytest.mark.slow  # the study, then two runs with callbacks under the stacked launcher
def test_checkpoint_and_early_stopping_through_the_stacked_launcher(study):
    before = study_files(study)
    overrides = ["--multirun", "hydra/launcher=stacked", "init=zeros,he_uniform", "seed=0",
                 "+callbacks=[checkpoint,early_stopping]", "trainer.max_epochs=4",
                 # Any epoch after the first improves by less than min_delta: the run stops after epoch 2.
                 "callbacks.early_stopping.patience=0", "callbacks.early_stopping.min_delta=10",
                 "hydra.sweep.dir=runs_try"]  # fmt: skip
    result = run(python_module("initstudy.train", *overrides), study)
    said = result.stdout + result.stderr
    assert said.count("trains alone: callbacks (checkpoint, early_stopping)") == 2, said[-3000:]
    for init in ("zeros", "he_uniform"):
        folder = study / "runs_try" / init / "seed_0"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 2 < 4, init
        # The epoch of the lowest validation loss, as a Lightning checkpoint whose step counts optimizer steps.
        (saved,) = (folder / rundir.CHECKPOINTS).iterdir()
        checkpoint = torch.load(saved, map_location="cpu", weights_only=False)
        steps_per_epoch = metrics["steps_completed"] // 2
        assert saved.name == f"epoch{checkpoint['epoch']:03d}.ckpt" and checkpoint["epoch"] in (0, 1)
        assert checkpoint["global_step"] == (checkpoint["epoch"] + 1) * steps_per_epoch
        study_run = study / "runs" / init / "seed_0"
        assert rundir.read_marker(folder)["identity"] != rundir.read_marker(study_run)["identity"]
        assert not (study / "runs_try/.staging").exists()
    assert study_files(study) == before


def distance(state: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    """The L2 distance between two states of the network, all tensors together."""
    return float(torch.cat([(state[name] - start[name]).flatten() for name in start]).norm())


@pytest.mark.slow  # the study, then two runs (clipped and not)
def test_gradient_clipping_bounds_each_step(study):
    """Plain SGD moves the network by lr x the gradient each step; with the gradient clipped to a norm of c
    (all of the network's tensors together, as Lightning clips), 16 steps move it by at most 16 x lr x c."""
    sgd = ["init=he_uniform", "seed=0", "optimizer=sgd", "optimizer.momentum=0", "optimizer.lr=0.1"]
    run(
        python_module(
            "initstudy.train", *sgd, "trainer.gradient_clip_val=0.01", "hydra.run.dir=runs_try/clip"
        ),
        study,
    )
    run(python_module("initstudy.train", *sgd, "hydra.run.dir=runs_try/free"), study)
    metrics = json.loads((study / "runs_try/clip/metrics.json").read_text())
    bound = metrics["steps_completed"] * 0.1 * 0.01
    start = weights.load(study / "runs_try/free/weights_initial.pt")
    assert weights.load(study / "runs_try/clip/weights_initial.pt").keys() == start.keys()
    assert distance(weights.load(study / "runs_try/clip/weights_final.pt"), start) <= bound * (1 + 1e-5)
    assert distance(weights.load(study / "runs_try/free/weights_final.pt"), start) > 2 * bound
