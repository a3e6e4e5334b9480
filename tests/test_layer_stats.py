"""Per-layer statistics during training (initstudy.nn.layer_stats): what a probe records, that probing changes no
bit of training, and where the rows land (layer_stats.csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.nn import layer_stats
from initstudy.nn.model import MLP
from initstudy.runs import rundir

BASE = ["logger=offline", "data.batch_size=32", "data.val_size=100", "trainer.max_epochs=2",
        "model.hidden_sizes=[48,32,16]"]  # fmt: skip


def run_files(root: Path, out: Path, *overrides: str) -> dict[str, bytes]:
    from initstudy.train.fit import train_run

    cfg = compose_config([*BASE, f"data.root={root / 'data'}", *overrides])
    train_run(cfg, out, rundir.staging_dir(out), "test")
    return {path.name: path.read_bytes() for path in out.iterdir() if path.name in rundir.OWNED_FILES}


@pytest.mark.parametrize("activation", ["tanh", "softsign", "relu"])
def test_probing_changes_no_bit_of_training_and_records_every_layer(study_root: Path, tmp_path: Path,
                                                                    activation: str):  # fmt: skip
    act = f"model.activation={activation}"
    plain = run_files(study_root, tmp_path / "plain", act)
    probed = run_files(study_root, tmp_path / "probed", act, "module.layer_stats_every_n_steps=4")
    assert rundir.LAYER_STATS not in plain
    for name in ("metrics.json", "history.csv", rundir.PREDICTIONS, *rundir.WEIGHT_FILES):
        assert probed[name] == plain[name], name
    stats = pd.read_csv(tmp_path / "probed" / rundir.LAYER_STATS)
    steps_run = int(pd.read_csv(tmp_path / "probed" / "history.csv")["step"].max())
    assert sorted(stats.step.unique()) == list(range(0, steps_run + 1, 4))
    assert sorted(stats.layer.unique()) == [1, 2, 3]
    per_probe = stats.groupby(["step", "layer"]).statistic.apply(frozenset)
    assert per_probe.nunique() == 1  # every probe records the same statistics
    names = next(iter(per_probe))
    assert {"act_mean", "act_std", "act_q50", "grad_pre_std", "grad_pre_q99", "weight_grad_std"} <= names
    assert ("dead_or_saturated" in names) is True  # relu: dead units; tanh, softsign: saturated share
    assert stats.value.notna().all()


def test_a_probe_reports_the_layers_own_statistics():
    torch.manual_seed(0)
    model = MLP([40, 30], activation="tanh")
    instantiate(compose_config(["init=glorot_uniform"]).init)(model)
    images, labels = torch.rand(50, 784), torch.randint(0, 10, (50,))
    rows = pd.DataFrame(layer_stats.measure(model, images, labels, step=7))
    assert (rows.step == 7).all()
    value = rows.set_index(["layer", "statistic"]).value
    # By hand: the second layer's activations and dL/dz.
    z1 = model.hidden[0][0](images)
    z2 = model.hidden[1][0](torch.tanh(z1))
    z2.retain_grad()
    F.cross_entropy(model.head(torch.tanh(z2)), labels).backward()
    a2 = torch.tanh(z2).detach().double()
    assert value[(2, "act_mean")] == pytest.approx(float(a2.mean()), rel=1e-5, abs=1e-9)
    assert value[(2, "act_std")] == pytest.approx(float(a2.std()), rel=1e-5)
    assert value[(2, "act_q50")] == pytest.approx(float(a2.flatten().median()), abs=1e-3)
    assert value[(2, "grad_pre_std")] == pytest.approx(float(z2.grad.double().std()), rel=1e-5)
    assert value[(2, "weight_grad_std")] == pytest.approx(
        float(model.hidden[1][0].weight.grad.std()), rel=1e-4
    )
    assert value[(2, "act_q01")] <= value[(2, "act_q25")] <= value[(2, "act_q75")] <= value[(2, "act_q99")]


def test_a_probe_writes_no_gradient_and_no_state():
    torch.manual_seed(0)
    model = MLP([20])
    images, labels = torch.rand(10, 784), torch.randint(0, 10, (10,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    layer_stats.measure(model, images, labels, step=0)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_zero_weights_relu_layers_are_all_dead():
    model = MLP([20, 20])
    instantiate(compose_config(["init=zeros"]).init)(model)
    rows = pd.DataFrame(layer_stats.measure(model, torch.rand(10, 784), torch.randint(0, 10, (10,)), step=0))
    dead = rows[rows.statistic == "dead_or_saturated"].value
    assert len(dead) == 2 and (dead == 1.0).all()


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_a_bad_interval_is_one_line_naming_it(value: str):
    with pytest.raises(ConfigError, match="layer_stats_every_n_steps") as error:
        validate(compose_config([f"module.layer_stats_every_n_steps={value}"]))
    assert "\n" not in str(error.value).strip()
