"""The weight gain that puts a network of a given activation at the edge of chaos (torch-free: composing a
config must not import torch).

With zero biases, a layer's weights of std ``gain / sqrt(fan)`` keep the mean-field signal at the order-to-chaos
boundary (chi_1 = 1), where it neither shrinks nor grows with depth in expectation: He et al. 2015's sqrt(2) for
ReLU (and leaky ReLU's sqrt(2 / (1 + slope^2)), both what ``torch.nn.init.calculate_gain`` returns); 1 where
phi(0) = 0 and phi'(0) = 1 (tanh and softsign: Schoenholz et al. 2017's sigma_w^2 = 1 at sigma_b^2 = 0; linear,
Saxe et al. 2014). ``calculate_gain("tanh")`` is 5/3, which lies in tanh's chaotic phase: not used here.
``init=orthogonal_critical`` takes its gain from here through the ``initstudy.critical_gain`` resolver.
"""

from __future__ import annotations

import math

LEAKY_RELU_SLOPE = 0.01  # nn.LeakyReLU's default, the one initstudy.nn.model uses

CRITICAL_GAINS: dict[str, float] = {
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + LEAKY_RELU_SLOPE**2)),
    "tanh": 1.0,
    "softsign": 1.0,
    "linear": 1.0,
}


def critical_gain(activation: str) -> float:
    """``activation``'s gain in :data:`CRITICAL_GAINS`; a one-line error naming the allowed ones otherwise."""
    if activation not in CRITICAL_GAINS:
        raise ValueError(
            f"model.activation={activation} has no critical gain: init=orthogonal_critical allows "
            f"model.activation={','.join(CRITICAL_GAINS)}"
        )
    return CRITICAL_GAINS[activation]
