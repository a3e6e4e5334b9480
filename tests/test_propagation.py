"""Step-0 diagnostics where the answer is known analytically, LSUV, and the depth preset end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from conftest import python_module, run
from initstudy.config.compose import compose_config
from initstudy.nn.initializers import Orthogonal, VarianceScaling, Zeros
from initstudy.nn.model import MLP
from initstudy.nn.propagation import (
    bias_variances,
    gaussian_moments,
    jacobian_singular_values,
    mean_field,
    measure,
    measure_correlations,
    pair_expectation,
    predict,
    predict_correlations,
    predict_jacobian_mean_square,
)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(512, 784, generator=generator), torch.randint(0, 10, (512,), generator=generator)


def test_linear_network_with_orthogonal_weights_keeps_the_activation_scale(batch):
    images, labels = batch
    torch.manual_seed(0)
    model = MLP([784, 784, 784], activation="linear")
    Orthogonal("orthogonal")(model)
    stats = measure(model, images, labels)
    rms_input = images.pow(2).mean().sqrt().item()
    for layer in stats[:-1]:  # square orthogonal maps preserve every sample's norm exactly
        rms = math.sqrt(layer.act_std**2 + layer.act_mean**2)
        assert rms == pytest.approx(rms_input, rel=1e-3)


def test_zeros_gives_zero_gradients_for_all_but_the_last_layer(batch):
    images, labels = batch
    model = MLP([64, 32])
    Zeros("zeros")(model)
    stats = measure(model, images, labels)
    for layer in stats[:-1]:
        assert layer.act_std == 0 and layer.weight_grad_std == 0 and layer.grad_act_std == 0
    assert stats[-1].weight_grad_std == 0  # its inputs are all zero ...
    assert model.head.bias.grad.abs().sum() > 0  # ... only the output bias learns
    assert all(layer.dead_or_saturated == 1.0 for layer in stats[:-1])  # ReLU(0) = 0 everywhere


@pytest.mark.parametrize(
    ("name", "scale", "mode", "activation", "grows"),
    [("he", 2.0, "fan_in", "relu", False), ("lecun-relu", 1.0, "fan_in", "relu", True)],
)
def test_prediction_matches_measurement_on_a_deep_relu_net(batch, name, scale, mode, activation, grows):
    """He keeps the scale through 20 ReLU layers; LeCun (no factor 2) halves the variance at every layer."""
    images, labels = batch
    torch.manual_seed(0)
    model = MLP([512] * 20, activation=activation)
    initializer = VarianceScaling(name, scale, mode, "untruncated_normal")
    initializer(model)
    stats = measure(model, images, labels)
    predicted = predict(model, [initializer.expected_weight_std(m.weight) for m in model.linear_layers()], images,
                        stats[-1].grad_act_std)  # fmt: skip
    for layer, guess in zip(stats[:-1], predicted[:-1], strict=True):
        assert layer.pre_std == pytest.approx(guess["pre_std"], rel=0.25)
    shrink = stats[19].act_std / stats[0].act_std
    assert (shrink < 1e-2) if grows else (0.5 < shrink < 2)


def test_gaussian_moments_match_closed_forms():
    mean, second, derivative = gaussian_moments("relu", 4.0)
    assert second == pytest.approx(2.0, rel=1e-4)  # E[relu(z)^2] = q / 2
    assert mean == pytest.approx(2 / math.sqrt(2 * math.pi), rel=1e-4)
    assert derivative == pytest.approx(0.5, rel=1e-3)
    assert gaussian_moments("linear", 3.0)[1] == pytest.approx(3.0)


def test_lsuv_reaches_unit_output_variance_within_tolerance(batch):
    images, _ = batch
    torch.manual_seed(0)
    model = MLP([256, 256, 128], activation="tanh")
    initializer = instantiate(compose_config(["init=lsuv"]).init)
    initializer(model, batch=images)
    assert len(initializer.achieved) == 4
    for variance in initializer.achieved:
        assert abs(variance - 1.0) < initializer.tolerance
    with torch.no_grad():  # independently: every layer's output variance on the batch
        x = images
        for block in model.hidden:
            z = block[0](x)
            assert abs(z.var().item() - 1) < initializer.tolerance
            x = block[1](z)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in model.linear_layers())


def test_depth_and_width_build_the_network_and_bad_combinations_are_refused():
    from initstudy.config.validate import validate
    from initstudy.core.errors import ConfigError

    cfg = compose_config(["model.hidden_sizes=null", "model.depth=4", "model.width=32"])
    validate(cfg)
    assert [m.out_features for m in instantiate(cfg.model).linear_layers()] == [32, 32, 32, 32, 10]
    with pytest.raises(ConfigError, match="both given"):
        validate(compose_config(["model.depth=4", "model.width=32"]))
    with pytest.raises(ConfigError, match=r"model\.depth=0"):
        validate(compose_config(["model.hidden_sizes=null", "model.depth=0", "model.width=32"]))


def test_depth_preset_sweeps_initializers_depths_and_activations():
    cfg = compose_config(["experiment=depth"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    depths = [int(d) for d in params["model.depth"].split(",")]
    assert min(depths) == 2 and max(depths) >= 30
    assert set(params["model.activation"].split(",")) == {"relu", "tanh", "linear"}  # linear: the baseline
    # The arms of #14: Glorot's "standard" and torch's default beside the Keras ones, orthogonal at the critical
    # gain (sqrt(2) for ReLU), five seeds.
    assert {"standard", "torch_default", "orthogonal_critical", "lsuv"} <= set(params.init.split(","))
    assert "orthogonal" not in params.init.split(",")
    assert params.seed.split(",") == ["0", "1", "2", "3", "4"] and cfg.hydra.sweep.dir == "runs_depth"


@pytest.mark.slow
def test_depth_preset_trains_smallest_and_deepest_then_diagnoses_and_reports(synthetic_data_repo):
    repo = synthetic_data_repo
    # The preset's 10,000 training and 2,000 validation images, cut to the synthetic data's 600 (a larger size
    # is refused up front).
    sweep = ["experiment=depth", "model.depth=2,30", "model.activation=relu,tanh", "init=he_uniform,lsuv", "seed=0",
             "trainer.max_epochs=1", "data.train_size=500", "data.val_size=100"]  # fmt: skip
    run(python_module("initstudy.train", "--multirun", *sweep), repo)
    manifest = pd.read_csv(repo / "runs_depth/manifest.csv")
    assert len(manifest) == 8 and set(manifest.depth) == {2, 30}
    for entry in manifest.itertuples():
        metrics = json.loads((repo / "runs_depth" / entry.run_dir / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 1 or metrics["diverged"]
    run(python_module("initstudy.diagnose", "--out", "reports/depth/diagnostics", *sweep), repo)
    diagnostics = pd.read_csv(repo / "reports/depth/diagnostics/diagnostics.csv")
    assert set(diagnostics.depth) == {2, 30} and diagnostics.layer.max() == 31
    assert set(diagnostics[diagnostics.statistic == "correlation"].layer) == set(range(1, 32))
    jacobians = pd.read_csv(repo / "reports/depth/diagnostics/jacobian.csv")
    # One row per network (2 initializers x 2 activations x 2 depths), one seed each.
    assert len(jacobians) == 8 and (jacobians.seeds == 1).all()
    for figure in ("correlation_map.png", "jacobian_spectrum.png"):
        assert (repo / "reports/depth/diagnostics" / figure).is_file()
    run(python_module("initstudy.report", "--runs", "runs_depth", "--out", "reports/depth",
                      "--diagnostics", "reports/depth/diagnostics"), repo)  # fmt: skip
    report = (repo / "reports/depth/report.md").read_text()
    assert (
        "From which depth each initializer fails" in report and "**relu**" in report and "**tanh**" in report
    )
    summary = pd.read_csv(repo / "reports/depth/summary.csv")
    assert len(summary) == 8 and "act_std_last_over_first" in summary.columns
    assert (repo / "reports/depth/figures/accuracy_heatmap.png").is_file()


def test_diagnostics_cover_every_network_of_the_sweep_and_match_the_training_init(
    synthetic_data_repo, monkeypatch
):
    """diagnose() builds each (init, seed) network exactly as a training run does at step 0."""
    from initstudy.data.datamodule import load_mnist
    from initstudy.diagnose.measure import BATCH_SIZE, diagnose
    from initstudy.train.fit import build_model, configure_process

    monkeypatch.chdir(synthetic_data_repo)
    diagnosis = diagnose(["init=he_uniform,lsuv", "seed=0,1"])
    frame = diagnosis.layers
    assert set(zip(frame.init, frame.seed, strict=True)) == {
        (i, s) for i in ("he_uniform", "lsuv") for s in (0, 1)
    }
    images, labels = load_mnist(synthetic_data_repo / "data/raw", train=True)
    for init in ("he_uniform", "lsuv"):
        cfg = compose_config([f"init={init}", "seed=1"])
        configure_process(cfg)  # what runner.train_run does before building the network
        model, _ = build_model(cfg, images)
        expected = measure(model, images[:BATCH_SIZE], labels[:BATCH_SIZE])
        rows = frame[(frame.init == init) & (frame.seed == 1) & (frame.statistic == "pre_std")].sort_values(
            "layer"
        )
        assert rows.measured.tolist() == [layer.pre_std for layer in expected]


# ---- bias variance, correlation map, mean field, Jacobian spectrum ------------------------------------------
def monte_carlo(f, q_a: float, q_b: float, c: float, n: int = 2_000_000) -> float:
    z = np.random.default_rng(0).standard_normal((2, n))
    u = math.sqrt(q_a) * z[0]
    v = math.sqrt(q_b) * (c * z[0] + math.sqrt(1 - c**2) * z[1])
    return float(np.mean(f(u) * f(v)))


@pytest.mark.parametrize(
    ("activation", "f"),
    [("relu", lambda x: np.maximum(x, 0)), ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x)),
     ("tanh", np.tanh), ("sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("linear", lambda x: x),
     ("softsign", lambda x: x / (1 + np.abs(x)))],
)  # fmt: skip
@pytest.mark.parametrize("c", [-0.6, 0.3, 0.95])
def test_pair_expectation_matches_monte_carlo_and_the_one_variable_moments(activation, f, c):
    assert pair_expectation(activation, 2.0, 3.0, c) == pytest.approx(monte_carlo(f, 2.0, 3.0, c), abs=4e-3)
    diagonal = pair_expectation(activation, np.array([1.5]), np.array([1.5]), np.array([1.0]))[0]
    assert diagonal == pytest.approx(gaussian_moments(activation, 1.5)[1], rel=1e-4)


def test_relu_derivative_pair_expectation_is_the_share_of_jointly_active_units():
    step = lambda x: (x > 0).astype(float)  # noqa: E731
    assert pair_expectation("relu", 2.0, 3.0, 0.3, derivative=True) == pytest.approx(
        monte_carlo(step, 2.0, 3.0, 0.3), abs=2e-3
    )


def test_mean_field_separates_order_from_chaos_for_tanh_and_puts_he_relu_at_the_edge():
    ordered, chaotic = mean_field("tanh", 0.8, 0.05), mean_field("tanh", 2.5, 0.05)
    assert ordered.chi_1 < 1 and ordered.c_star == pytest.approx(1.0, abs=1e-6)
    assert ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi_1), rel=1e-3)  # c* = 1: chi_c = chi_1
    assert chaotic.chi_1 > 1 and chaotic.c_star < 0.9 and math.isfinite(chaotic.xi_c)
    # q* is a fixed point of the variance map
    assert ordered.q_star == pytest.approx(0.8 * gaussian_moments("tanh", ordered.q_star)[1] + 0.05, rel=1e-6)
    assert mean_field("relu", 2.0, 0.0).chi_1 == pytest.approx(1.0, rel=1e-9)  # He: sigma_w^2 E[step^2] = 1


def test_correlation_map_prediction_matches_a_wide_tanh_net_with_biases(batch):
    images, _ = batch
    torch.manual_seed(0)
    model = MLP([2048] * 5, activation="tanh")
    initializer = VarianceScaling("wide", 1.5, "fan_in", "untruncated_normal")
    initializer(model)
    with torch.no_grad():
        for layer in model.linear_layers():
            layer.bias.normal_(0.0, 0.3)
    stds, biases = (
        [initializer.expected_weight_std(m.weight) for m in model.linear_layers()],
        bias_variances(model),
    )
    assert biases[0] == pytest.approx(0.09, rel=0.15)
    measured = measure_correlations(model, images).mean(axis=0)
    predicted = predict_correlations(model, stds, biases, images).mean(axis=0)
    assert measured[:-1] == pytest.approx(predicted[:-1], abs=0.03)  # the 10-unit head is too narrow
    # Without the bias term the prediction is off: biases pull the correlation of two inputs up.
    unbiased = predict_correlations(model, stds, [0.0] * len(biases), images).mean(axis=0)
    assert abs(unbiased[2] - measured[2]) > 0.05
    stats = measure(model, images, torch.zeros(len(images), dtype=torch.int64))
    with_bias = predict(model, stds, images, stats[-1].grad_act_std, biases)
    assert stats[2].pre_std == pytest.approx(with_bias[2]["pre_std"], rel=0.1)


def test_orthogonal_linear_network_is_an_isometry_and_gaussian_spreads_with_depth(batch):
    images, _ = batch
    torch.manual_seed(0)
    spreads = {}
    for depth in (2, 16):
        orthogonal = MLP([128] * depth, activation="linear")
        Orthogonal("orthogonal")(orthogonal)
        values = jacobian_singular_values(orthogonal, images)
        assert values == pytest.approx(np.ones_like(values), abs=1e-5)  # every singular value 1
        gaussian = MLP([128] * depth, activation="linear")
        initializer = VarianceScaling("lecun", 1.0, "fan_in", "untruncated_normal")
        initializer(gaussian)
        values = jacobian_singular_values(gaussian, images)
        spreads[depth] = values.std() / np.sqrt((values**2).mean())
        stds = [initializer.expected_weight_std(m.weight) for m in gaussian.linear_layers()]
        if depth == 2:  # the mean squared singular value is what the variance recursion predicts
            assert (values**2).mean() == pytest.approx(
                predict_jacobian_mean_square(gaussian, stds, images), rel=0.1
            )
    assert spreads[16] > 1.5 * spreads[2] > 0  # the relative spread is at most 1


def test_diagnose_writes_the_correlation_map_and_the_jacobian_per_network(synthetic_data_repo, monkeypatch):
    from initstudy.diagnose.measure import aggregate, aggregate_jacobians, diagnose

    monkeypatch.chdir(synthetic_data_repo)
    diagnosis = diagnose(["init=zeros,he_uniform", "seed=0,1"])
    correlations = aggregate(diagnosis.layers).query("statistic == 'correlation'")
    assert set(correlations.layer) == {1, 2, 3}
    zeros = correlations[correlations.init == "zeros"]
    # Zero weights and biases: every pre-activation is zero, so no cosine is defined, measured or predicted.
    assert zeros["mean"].isna().all() and zeros.predicted.isna().all()
    he = correlations[correlations.init == "he_uniform"]
    assert he["mean"].between(-1, 1).all() and he.predicted.notna().all()
    jacobians = aggregate_jacobians(diagnosis.jacobians)
    assert sorted(jacobians.init) == ["he_uniform", "zeros"] and (jacobians.seeds == 2).all()
    assert jacobians.set_index("init").loc["zeros", "mean_sq"] == 0
    assert jacobians.set_index("init").loc["he_uniform", "relative_spread"] > 0


@pytest.mark.parametrize("module", ["initstudy.diagnose.__main__", "initstudy.report.__main__"])
def test_stages_that_compute_predictions_pin_numpys_blas_whatever_the_environment_says(module: str):
    """OpenBLAS picks its kernels and threads per machine, and the predictions (numpy products) change in
    their last digits with either (initstudy.core.blas): the diagnose and report entry points load it with the AVX
    kernels on one thread, also when the environment asks for others."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "2"}
    code = (f"import {module}, json, threadpoolctl; print(json.dumps([[i['internal_api'], i.get('architecture'), "
            "i['num_threads']] for i in threadpoolctl.threadpool_info()]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert ["openblas", "Sandybridge", 1] in json.loads(done.stdout.strip().splitlines()[-1])
