"""Each initializer's weight statistics against its formula, on layers large enough for tight tolerances."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from initstudy.config.compose import compose_config, group_options
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.nn.gains import CRITICAL_GAINS, LEAKY_RELU_SLOPE
from initstudy.nn.initializers import TRUNCATED_NORMAL_STD_CORRECTION
from initstudy.nn.model import MLP

FAN_IN, FAN_OUT = 1024, 512  # weight shape (FAN_OUT, FAN_IN): 524,288 draws

# name -> (expected std, bound on |w| or None); Keras' definitions for the same names.
EXPECTED = {
    "random_normal": (0.01, None),
    "truncated_normal": (0.05 * TRUNCATED_NORMAL_STD_CORRECTION, 2 * 0.05),
    "glorot_uniform": (math.sqrt(2 / (FAN_IN + FAN_OUT)), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "glorot_normal": (
        math.sqrt(2 / (FAN_IN + FAN_OUT)),
        2 * math.sqrt(2 / (FAN_IN + FAN_OUT)) / TRUNCATED_NORMAL_STD_CORRECTION,
    ),
    "he_uniform": (math.sqrt(2 / FAN_IN), math.sqrt(6 / FAN_IN)),
    "he_normal": (math.sqrt(2 / FAN_IN), 2 * math.sqrt(2 / FAN_IN) / TRUNCATED_NORMAL_STD_CORRECTION),
    "lecun_uniform": (math.sqrt(1 / FAN_IN), math.sqrt(3 / FAN_IN)),
    "lecun_normal": (math.sqrt(1 / FAN_IN), 2 * math.sqrt(1 / FAN_IN) / TRUNCATED_NORMAL_STD_CORRECTION),
    "orthogonal": (1 / math.sqrt(FAN_IN), None),
    "torch_default": (1 / math.sqrt(3 * FAN_IN), 1 / math.sqrt(FAN_IN)),
    "standard": (1 / math.sqrt(3 * FAN_IN), 1 / math.sqrt(FAN_IN)),  # Glorot & Bengio's eq. 1, zero biases
    "gaussian": (math.sqrt(1 / FAN_IN), None),  # N(0, scale / fan_in), untruncated, scale 1 by default
    # The study's activation is ReLU: gain sqrt(2) (initstudy.nn.gains); every fan here is above FAN_OUT.
    "orthogonal_critical": (math.sqrt(2) / math.sqrt(FAN_IN), None),
}


def initialized_layer(name: str, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    instantiate(compose_config([f"init={name}"]).init)(layer)
    return layer


def test_every_option_has_a_config_and_an_expectation():
    assert set(group_options("init")) == set(EXPECTED) | {"zeros", "lsuv"}  # lsuv: tests/test_propagation.py


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_weight_std_mean_and_bounds_match_the_formula(name: str):
    layer = initialized_layer(name)
    weight = layer.weight.detach().double()
    expected_std, bound = EXPECTED[name]
    # Mean 0: the sample mean's standard error is std / sqrt(524,288) ~ 0.0014 std; allow 5 of those.
    assert abs(weight.mean().item()) < 5 * expected_std / weight.numel() ** 0.5
    assert weight.std().item() == pytest.approx(expected_std, rel=0.01)
    if bound is not None:
        assert weight.abs().max().item() <= bound + 1e-7
        assert weight.abs().max().item() > 0.95 * bound  # the bound is actually reached: not a narrower law
    initializer = instantiate(compose_config([f"init={name}"]).init)
    assert initializer.expected_weight_std(layer.weight) == pytest.approx(expected_std, rel=1e-9)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"torch_default"}))
def test_biases_start_at_zero_like_keras(name: str):
    assert torch.count_nonzero(initialized_layer(name).bias) == 0


def test_torch_default_keeps_linear_reset_parameters_including_biases():
    layer = initialized_layer("torch_default")
    torch.manual_seed(0)
    reference = nn.Linear(FAN_IN, FAN_OUT)  # its constructor runs reset_parameters() with the same RNG
    assert torch.count_nonzero(layer.bias) > 0
    assert layer.bias.abs().max() <= 1 / math.sqrt(FAN_IN)
    assert layer.weight.shape == reference.weight.shape


def test_orthogonal_rows_are_orthonormal():
    weight = initialized_layer("orthogonal").weight.detach().double()
    assert torch.allclose(weight @ weight.T, torch.eye(FAN_OUT, dtype=torch.float64), atol=1e-5)


def test_zeros_gives_identical_rows_in_every_layer():
    model = MLP([64, 32])
    instantiate(compose_config(["init=zeros"]).init)(model)
    for layer in model.linear_layers():
        assert torch.unique(layer.weight, dim=0).shape[0] == 1
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0


def test_seed_determines_the_draw():
    assert torch.equal(initialized_layer("he_normal", 3).weight, initialized_layer("he_normal", 3).weight)
    assert not torch.equal(initialized_layer("he_normal", 3).weight, initialized_layer("he_normal", 4).weight)


def test_parameters_are_config_fields():
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    instantiate(compose_config(["init=random_normal", "init.std=0.2"]).init)(layer)
    assert layer.weight.std().item() == pytest.approx(0.2, rel=0.01)
    instantiate(compose_config(["init=orthogonal", "init.gain=2.0"]).init)(layer)
    weight = layer.weight.detach().double()
    assert torch.allclose(weight @ weight.T, 4 * torch.eye(FAN_OUT, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("name", ["he_uniform", "random_normal", "orthogonal", "standard", "zeros"])
def test_bias_std_draws_biases_after_their_kernel_and_zero_draws_nothing(name: str):
    """``+init.bias_std=s``: biases ~ N(0, s^2) (the mean-field sigma_b), each drawn right after its layer's
    kernel; the default 0 leaves them zero without touching the random stream (every existing run's draw)."""
    torch.manual_seed(0)
    plain = MLP([512, 512])
    instantiate(compose_config([f"init={name}"]).init)(plain)
    torch.manual_seed(0)
    zero = MLP([512, 512])
    instantiate(compose_config([f"init={name}", "+init.bias_std=0.0"]).init)(zero)
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), zero.state_dict().values(), strict=True)
    )
    torch.manual_seed(0)
    drawn = MLP([512, 512])
    instantiate(compose_config([f"init={name}", "+init.bias_std=0.3"]).init)(drawn)
    biases = torch.cat([layer.bias.detach() for layer in drawn.linear_layers()]).double()
    assert biases.std().item() == pytest.approx(0.3, rel=0.05)
    assert abs(biases.mean().item()) < 5 * 0.3 / biases.numel() ** 0.5
    # The first kernel is drawn before any bias: the same as without biases.
    assert torch.equal(drawn.linear_layers()[0].weight, plain.linear_layers()[0].weight)


@pytest.mark.parametrize("override", ["+init.bias_std=-0.1", "+init.bias_std=abc"])
def test_a_bad_bias_std_is_one_line_naming_it(override: str):
    with pytest.raises(ConfigError, match="bias_std") as error:
        validate(compose_config(["init=he_uniform", override]))
    assert "\n" not in str(error.value).strip()


@pytest.mark.parametrize("name", ["lsuv", "torch_default"])
def test_lsuv_and_torch_default_take_no_bias_std(name: str):
    """LSUV keeps biases at zero by design; torch_default draws them its own way: neither accepts one."""
    with pytest.raises(ConfigError, match="bias_std"):
        validate(compose_config([f"init={name}", "+init.bias_std=0.1"]))


@pytest.mark.parametrize("activation", sorted(CRITICAL_GAINS))
def test_orthogonal_critical_takes_the_gain_of_the_model_activation(activation: str):
    cfg = compose_config(["init=orthogonal_critical", f"model.activation={activation}"])
    validate(cfg)
    assert cfg.init.gain == CRITICAL_GAINS[activation]
    initializer = instantiate(cfg.init)
    weight = torch.empty(FAN_OUT, FAN_IN)
    initializer.init_weight(weight)
    singular_values = torch.linalg.svdvals(weight.double())
    # Orthogonal times the gain: every singular value is the gain.
    assert torch.allclose(
        singular_values, torch.full_like(singular_values, CRITICAL_GAINS[activation]), atol=1e-5
    )


def test_the_critical_gains_of_relu_are_torchs_own():
    """He et al.'s sqrt(2) and leaky ReLU's, as torch.nn.init computes them (initstudy.nn.gains is torch-free)."""
    assert CRITICAL_GAINS["relu"] == nn.init.calculate_gain("relu")
    assert CRITICAL_GAINS["leaky_relu"] == pytest.approx(
        nn.init.calculate_gain("leaky_relu", LEAKY_RELU_SLOPE)
    )
    assert nn.LeakyReLU().negative_slope == LEAKY_RELU_SLOPE  # the slope initstudy.nn.model builds


def test_the_critical_gain_of_tanh_is_the_mean_field_edge_of_chaos():
    """chi_1 = sigma_w^2 E[phi'(h)^2] = 1 at sigma_b = 0: the fixed point q* = 0 where phi'(0) = 1, so sigma_w = 1
    (Schoenholz et al. 2017); torch's 5/3 would be chaotic."""
    assert CRITICAL_GAINS["tanh"] == 1.0 < nn.init.calculate_gain("tanh")


@pytest.mark.parametrize("activation", ["gelu", "selu", "sigmoid", "elu"])
def test_orthogonal_critical_refuses_an_activation_without_a_critical_gain(activation: str):
    cfg = compose_config(["init=orthogonal_critical", f"model.activation={activation}"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert f"model.activation={activation}" in message and ",".join(CRITICAL_GAINS) in message
