"""Keras' Adam (initstudy.nn.keras_adam.KerasAdam) against its update written out by hand, and the identity that
makes it differ from torch.optim.Adam with the same eps: Keras' eps is torch's eps / sqrt(1 - beta2^t)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from initstudy.config.compose import compose_config
from initstudy.nn.keras_adam import KerasAdam

LR, BETA1, BETA2, EPS = 0.01, 0.9, 0.999, 1e-7
# Gradients of several sizes, some near eps, where the placement of eps shows; one sign change per column.
GRADIENTS = np.array([[1e-6, -3e-7, 0.5, 2e-8], [2e-6, 1e-7, -0.4, 2e-8], [-1e-6, 5e-7, 0.3, -1e-8],
                      [5e-7, -2e-7, 0.2, 3e-8], [1e-6, 1e-7, -0.1, 1e-8], [3e-6, 4e-7, 0.05, 2e-8]])  # fmt: skip
START = np.array([0.3, -0.2, 1.0, 0.0])


def keras_by_hand(gradients: np.ndarray, start: np.ndarray) -> list[np.ndarray]:
    """Keras' Adam, as its update is written: alpha_t = lr sqrt(1 - b2^t) / (1 - b1^t); p -= alpha_t m / (sqrt(v) + eps)."""
    p, m, v, out = start.copy(), np.zeros_like(start), np.zeros_like(start), []
    for t, g in enumerate(gradients, start=1):
        m = m + (g - m) * (1 - BETA1)
        v = v + (g * g - v) * (1 - BETA2)
        alpha = LR * math.sqrt(1 - BETA2**t) / (1 - BETA1**t)
        p = p - alpha * m / (np.sqrt(v) + EPS)
        out.append(p.copy())
    return out


def run(optimizer_of, gradients: np.ndarray, per_step=None) -> list[np.ndarray]:
    param = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    optimizer = optimizer_of([param])
    out = []
    for t, g in enumerate(gradients, start=1):
        if per_step is not None:
            per_step(optimizer, t)
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        out.append(param.detach().numpy().copy())
    return out


def test_keras_adam_is_the_keras_update_written_out_by_hand():
    ours = run(lambda p: KerasAdam(p, lr=LR, betas=(BETA1, BETA2), eps=EPS), GRADIENTS)
    for step, (got, expected) in enumerate(zip(ours, keras_by_hand(GRADIENTS, START), strict=True), start=1):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")


def test_keras_eps_is_torch_eps_over_sqrt_one_minus_beta2_to_the_t():
    def keras_eps_in_torch_terms(optimizer: torch.optim.Optimizer, t: int) -> None:
        optimizer.param_groups[0]["eps"] = EPS / math.sqrt(1 - BETA2**t)

    adam = lambda p: torch.optim.Adam(p, lr=LR, betas=(BETA1, BETA2), eps=EPS)  # noqa: E731
    matched = run(adam, GRADIENTS, keras_eps_in_torch_terms)
    np.testing.assert_allclose(matched[-1], keras_by_hand(GRADIENTS, START)[-1], rtol=1e-12, atol=1e-15)
    # the same eps as a constant is a different rule: the small gradients' steps differ by several percent
    constant = run(adam, GRADIENTS)
    moved_keras = keras_by_hand(GRADIENTS, START)[-1] - START
    moved_torch = constant[-1] - START
    assert abs(moved_torch[3] / moved_keras[3] - 1) > 0.05
    assert EPS / math.sqrt(1 - BETA2) == pytest.approx(3.16e-6, rel=1e-3)  # step 1
    assert EPS / math.sqrt(1 - BETA2**157) == pytest.approx(2.6e-7, rel=0.02)


def test_keras_adam_updates_stacked_tensors_elementwise():
    # One optimizer over a [2, 4] tensor equals two over its rows: what a stacked group needs
    both = np.stack([GRADIENTS, GRADIENTS[::-1] * 3])
    param = torch.nn.Parameter(torch.tensor(np.stack([START, START]), dtype=torch.float64))
    optimizer = KerasAdam([param], lr=LR, betas=(BETA1, BETA2), eps=EPS)
    for t in range(len(GRADIENTS)):
        param.grad = torch.tensor(both[:, t], dtype=torch.float64)
        optimizer.step()
    for row in range(2):
        np.testing.assert_allclose(
            param.detach().numpy()[row], keras_by_hand(both[row], START)[-1], rtol=1e-12
        )


def test_the_adam_keras_option_builds_it_and_the_default_stays_torch_adam():
    cfg = compose_config(["optimizer=adam_keras"])
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(optimizer, KerasAdam) and optimizer.param_groups[0]["eps"] == 1e-7
    assert compose_config([]).optimizer._target_ == "torch.optim.Adam"
