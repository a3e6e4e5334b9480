"""The training path through Lightning's front doors: config groups instantiated by Hydra, the Trainer's
precision and logging interval honoured, the final evaluation in the Trainer's test loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from initstudy.config.compose import compose_config, config_hash
from initstudy.data.synthetic import SyntheticMNIST
from initstudy.nn.model import MLP
from initstudy.runs import rundir

# 600 synthetic training images, the last 100 held out: 500 at batch 32 = 16 optimizer steps per epoch; 200 test
# images.
STEPS_PER_EPOCH = -(-500 // 32)


@pytest.fixture
def data_root(tmp_path: Path, synthetic_mnist: SyntheticMNIST) -> Path:
    synthetic_mnist.write(tmp_path / "data" / "MNIST" / "raw")
    return tmp_path / "data"


def train(data_root: Path, out: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    """One run in this process (runner.train_run, offline) on the synthetic data; its metrics and history."""
    from initstudy.train.fit import train_run

    cfg = compose_config(
        ["logger=offline", f"data.root={data_root}", "data.batch_size=32", "data.val_size=100", *overrides]
    )
    train_run(cfg, out, rundir.staging_dir(out), "test")
    return json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "history.csv")


def test_trainer_datamodule_and_module_are_instantiated_from_their_groups(at_repo: Path, data_root: Path):
    import pytorch_lightning as pl

    from initstudy.data.datamodule import MNISTDataModule
    from initstudy.train.module import InitStudyModule

    cfg = compose_config(["trainer.max_epochs=1"])
    trainer = instantiate(cfg.trainer, accelerator="cpu", logger=False, enable_progress_bar=False)
    assert isinstance(trainer, pl.Trainer) and trainer.log_every_n_steps == cfg.trainer.log_every_n_steps
    datamodule = instantiate(cfg.data, root=str(data_root), seed=0, device="cpu")
    assert isinstance(datamodule, MNISTDataModule) and datamodule.steps_per_chunk == cfg.data.steps_per_chunk
    from initstudy.train.members import Member
    from initstudy.train.network import MemberShards

    model = MLP([8])
    module = instantiate(cfg.module, _partial_=True)(network=MemberShards([model]), members=[Member(model)],
                                                     optimizer_factory=instantiate(cfg.optimizer), steps_per_epoch=1)  # fmt: skip
    assert isinstance(module, InitStudyModule) and module.stop_on_divergence is cfg.module.stop_on_divergence


def test_splits_keep_uint8_pixels_and_read_them_as_the_whole_set_scaled_at_once(data_root: Path):
    """The splits hold the files' bytes (a quarter of float32's memory); any read (a gathered mini-batch, an
    evaluation slice, a probe) is bit for bit the same rows of the whole set scaled to [0, 1] at once, so no
    result depends on when the scaling happens. Every pixel value, at every offset and length of a slice (the
    vector kernel and its scalar tail)."""
    from initstudy.data.datamodule import MNISTDataModule, ScaledPixels, load_mnist

    values = torch.arange(256, dtype=torch.uint8).repeat(5).reshape(-1, 4)
    whole = values.to(torch.float32) / 255.0
    pixels = ScaledPixels(values)
    for start in range(0, 40):
        for length in (1, 3, 8, 17, 64, 100):
            assert torch.equal(pixels[start : start + length], whole[start : start + length])
    datamodule = MNISTDataModule(data_root, batch_size=32, seed=0, val_size=100)
    datamodule.setup()
    assert datamodule.train.images.pixels.dtype == torch.uint8
    images, _ = load_mnist(data_root, train=True)
    index = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:64]
    assert torch.equal(datamodule.train.images[index], images[:500][index])
    slices = list(datamodule.eval.images.split(30))
    assert torch.equal(torch.cat(slices), images[500:]) and [len(part) for part in slices] == [30, 30, 30, 10]


@pytest.mark.parametrize("every", [5, 19, 50])
def test_train_loss_interval_is_the_trainers_log_every_n_steps_in_optimizer_steps(
    at_repo: Path, data_root: Path, tmp_path: Path, every: int
):
    """One window mean per log_every_n_steps optimizer steps, across epoch ends, while a Lightning batch is a
    chunk of data.steps_per_chunk=4 steps."""
    metrics, history = train(data_root, tmp_path / "run", "init=he_uniform", "trainer.max_epochs=3",
                             f"trainer.log_every_n_steps={every}", "data.steps_per_chunk=4")  # fmt: skip
    steps = 3 * STEPS_PER_EPOCH
    assert metrics["steps_completed"] == steps
    points = history[history.metric == "train/loss_step"]
    assert points.step.tolist() == list(range(every, steps + 1, every))
    assert points.epoch.tolist() == [-(-step // STEPS_PER_EPOCH) for step in points.step]


def test_final_test_pass_runs_in_the_trainer_and_equals_an_evaluation_by_hand(
    at_repo: Path, data_root: Path, tmp_path: Path
):
    """trainer.test evaluates the trained weights on the test split, also when the per-epoch evaluation is a
    validation split: its loss and accuracy equal those computed directly from the weights and the images."""
    from initstudy.nn import weights
    from initstudy.nn.model import MLP
    from initstudy.train.fit import configure_process, fit
    from initstudy.train.runner import build_datamodule

    cfg = compose_config(["init=he_uniform", f"data.root={data_root}", "data.val_size=100",
                          "trainer.max_epochs=1"])  # fmt: skip
    (outcome,) = fit([cfg], tmp_path, [None], 0, [""])
    configure_process(cfg)
    datamodule = build_datamodule(cfg, "cpu")
    assert datamodule.eval.name == "val" and "val/acc" in outcome.metrics
    model = instantiate(cfg.model)
    assert isinstance(model, MLP)
    model.load_state_dict(outcome.weights[weights.FINAL])
    images, labels = datamodule.test.images[:], datamodule.test.labels
    with torch.inference_mode():
        logits = model(images)
    expected_loss = float(F.cross_entropy(logits, labels, reduction="sum")) / len(labels)
    assert outcome.metrics["test/loss"] == expected_loss
    assert outcome.metrics["test/acc"] == int((logits.argmax(dim=1) == labels).sum()) / len(labels)
    predicted = torch.bincount(logits.argmax(dim=1), minlength=10)
    assert outcome.metrics["test/distinct_predictions"] == int((predicted > 0).sum())


def test_bf16_mixed_precision_trains_close_to_float32(at_repo: Path, data_root: Path, tmp_path: Path):
    """bf16-mixed (autocast in every training, validation and test step, through Lightning's precision plugin)
    gives finite results close to float32. Not equal: bfloat16 keeps 8 significant bits, so the two runs
    take different paths from the first step on. On this learnable task both reach near-perfect accuracy;
    5 points of accuracy (10 of the 200 test images) bound rounding noise, while a step that did not train
    (bf16 ignored by backward or the optimizer, or a broken autocast) stays near 10%."""
    overrides = ("init=he_uniform", "trainer.max_epochs=2")
    full, _ = train(data_root, tmp_path / "fp32", *overrides)
    half, history = train(data_root, tmp_path / "bf16", *overrides, "trainer.precision=bf16-mixed")
    assert history.value.map(math.isfinite).all() and not half["diverged"]
    assert full["test/acc"] > 0.9
    assert abs(half["test/acc"] - full["test/acc"]) <= 0.05
    assert half["test/loss"] == pytest.approx(full["test/loss"], rel=0.5, abs=0.05)
    assert half["test/acc"] != full["test/acc"] or half["test/loss"] != full["test/loss"]  # bf16 really ran


def test_thread_count_is_hashed_with_numerics(at_repo: Path):
    assert config_hash(compose_config(["numerics=fast"])) != config_hash(
        compose_config(["numerics=fast", "numerics.num_threads=2"])
    )


def test_steps_per_chunk_is_a_speed_knob_outside_the_run_identity(at_repo: Path):
    assert config_hash(compose_config([])) == config_hash(compose_config(["data.steps_per_chunk=8"]))


def test_validation_is_evaluated_every_k_steps_and_the_test_set_once(
    at_repo: Path, data_root: Path, tmp_path
):
    from initstudy.train.convergence import first_crossing

    metrics, history = train(data_root, tmp_path / "run", "init=he_uniform", "trainer.max_epochs=2",
                             "module.val_every_n_steps=5")  # fmt: skip
    series = history[history.metric == "val/acc_step"].sort_values("step")
    # step 0, the log-spaced early steps (1, 2, 5, 10, 20), every 5 steps, every epoch end (16, 32): each once
    assert series.step.tolist() == [0, 1, 2, 5, 10, 15, 16, 20, 25, 30, 32]
    assert series.step.is_unique
    epoch_ends = history[history.metric == "val/acc"].set_index("step").value
    assert series.set_index("step").value[epoch_ends.index].tolist() == epoch_ends.tolist()
    assert not history.metric.str.startswith("test/").any()  # the test set is not in any curve
    for threshold in (0.90, 0.95, 0.97, 0.98):
        expected = first_crossing(series.step.tolist(), series.value.tolist(), threshold)
        assert metrics[f"steps_to_{round(threshold * 100)}"] == expected
    losses = history[history.metric == "val/loss_step"]
    best = losses.loc[losses.value.idxmin()]
    assert (metrics["val/loss_min"], metrics["val/loss_min_step"]) == (best.value, best.step)
    assert metrics["steps_completed"] == 2 * STEPS_PER_EPOCH


def test_saved_weights_are_the_initial_and_final_network_and_reproduce_the_test_accuracy(
    at_repo: Path, data_root: Path, tmp_path: Path
):
    from initstudy.data.datamodule import EvaluationBatches
    from initstudy.nn import weights
    from initstudy.train.fit import build_model, configure_process
    from initstudy.train.runner import build_datamodule

    overrides = ["init=he_uniform", "trainer.max_epochs=1"]
    metrics, _ = train(data_root, tmp_path / "run", *overrides)
    initial = weights.load(tmp_path / "run" / weights.INITIAL)
    final = weights.load(tmp_path / "run" / weights.FINAL)
    cfg = compose_config(["logger=offline", f"data.root={data_root}", "data.batch_size=32", "data.val_size=100",
                          *overrides])  # fmt: skip
    configure_process(cfg)
    datamodule = build_datamodule(cfg, "cpu")
    model, _ = build_model(cfg, datamodule.train.images)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in initial.items())
    assert any(not torch.equal(initial[name], final[name]) for name in initial)
    model.load_state_dict(final)
    correct = 0
    with torch.no_grad():
        predicted = [model(images).argmax(dim=1) for images, _ in EvaluationBatches(datamodule.test, 10_000)]
        for images, labels in EvaluationBatches(datamodule.test, cfg.data.eval_batch_size):
            correct += int((model(images).argmax(dim=1) == labels).sum())
    assert correct / len(datamodule.test) == metrics["test/acc"]
    # test_predictions.npy: every test image's true and predicted class in the test set's order, as the final
    # weights predict it, uint8, and the same accuracy
    truth, saved = np.load(tmp_path / "run" / rundir.PREDICTIONS, allow_pickle=False)
    assert saved.dtype == np.uint8 and saved.shape == (len(datamodule.test),)
    assert np.array_equal(truth, datamodule.test.labels.cpu().numpy())
    assert np.array_equal(saved, torch.cat(predicted).numpy())
    assert float(np.mean(saved == truth)) == metrics["test/acc"]
