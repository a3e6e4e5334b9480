"""Signal propagation at initialization: what flows through a network at step 0, measured and predicted.

Measured on a fixed batch of real training images, per layer: mean and std of pre-activations and
activations, the share of dead ReLU units (zero for every image in the batch) or saturated tanh/sigmoid
outputs, the std of the back-propagated gradient with respect to each layer's activations, and the std of
each weight gradient.

Predicted by the variance argument behind the initializers (Glorot & Bengio 2010; He et al. 2015; in its
general mean-field form, Poole et al. 2016): with independent zero-mean weights of variance sigma_w^2 and
zero biases, a layer's pre-activation second moment is q_l = fan_in * sigma_w^2 * E[phi(z)^2], z ~ N(0,
q_{l-1}); backwards, the gradient's second moment is fan_out * sigma_w^2 * E[phi'(z)^2] times the next one.
Glorot's "linear regime" and He's "ReLU halves the variance" are this recursion for phi = identity and ReLU.
Gaussian expectations are computed numerically, so any activation works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from initstudy.model import MLP

SATURATION = {"tanh": 0.99, "sigmoid": 0.99}  # |tanh| > 0.99; sigmoid outside [0.01, 0.99]
# E[f(z)], z ~ N(0, 1), on a dense grid: Gauss-Hermite converges slowly for kinked activations (ReLU).
_NODES = np.linspace(-12.0, 12.0, 48_001)
_WEIGHTS = np.exp(-(_NODES**2) / 2)
_WEIGHTS /= _WEIGHTS.sum()

_NUMPY_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: (s := 1 / (1 + np.exp(-z))) * (1 - s)),
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "gelu": (
        lambda z: z * 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
        lambda z: (
            0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
            + z * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "selu": (
        lambda z: (
            1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(np.minimum(z, 0)) - 1))
        ),
        lambda z: 1.0507009873554805 * np.where(z > 0, 1.0, 1.6732632423543772 * np.exp(np.minimum(z, 0))),
    ),
    "elu": (
        lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1),
        lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0))),
    ),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z), lambda z: np.where(z > 0, 1.0, 0.01)),
}


def gaussian_moments(activation: str, q: float) -> tuple[float, float, float]:
    """(E[phi(z)], E[phi(z)^2], E[phi'(z)^2]) for z ~ N(0, q)."""
    phi, dphi = _NUMPY_ACTIVATIONS[activation]
    z = _NODES * math.sqrt(max(q, 0.0))
    return float(_WEIGHTS @ phi(z)), float(_WEIGHTS @ phi(z) ** 2), float(_WEIGHTS @ dphi(z) ** 2)


@dataclass
class LayerStats:
    layer: int  # 1-based; the last is the output (logits) layer
    pre_mean: float
    pre_std: float
    act_mean: float
    act_std: float
    dead_or_saturated: float | None  # share of units; None for the output layer and activations without it
    grad_act_std: float  # std of dL/d(activation output) (for the head: dL/dlogits)
    weight_grad_std: float


def measure(model: MLP, images: torch.Tensor, labels: torch.Tensor) -> list[LayerStats]:
    """One forward and backward pass at initialization, recording every layer (no optimizer step)."""
    activation = model.activation_name
    passed = model.forward_with_intermediates(images)
    pre, acts, logits = passed.pre_activations, passed.activations, passed.logits
    for tensor in (*acts, logits):
        tensor.retain_grad()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(logits, labels).backward()
    stats = []
    for index, (z_live, a_live) in enumerate(zip(pre, acts, strict=True)):
        z, a = z_live.detach(), a_live.detach()
        stats.append(
            LayerStats(
                layer=index + 1,
                pre_mean=float(z.mean()),
                pre_std=float(z.std()),
                act_mean=float(a.mean()),
                act_std=float(a.std()),
                dead_or_saturated=_dead_or_saturated(a, activation),
                grad_act_std=float(a_live.grad.std()),
                weight_grad_std=float(model.hidden[index][0].weight.grad.std()),
            )
        )
    stats.append(
        LayerStats(
            layer=len(pre) + 1,
            pre_mean=float(logits.detach().mean()),
            pre_std=float(logits.detach().std()),
            act_mean=float(logits.detach().mean()),
            act_std=float(logits.detach().std()),
            dead_or_saturated=None,
            grad_act_std=float(logits.grad.std()),
            weight_grad_std=float(model.head.weight.grad.std()),
        )
    )
    return stats


def _dead_or_saturated(a: torch.Tensor, activation: str) -> float | None:
    if activation in ("relu",):
        return float(((a > 0).sum(dim=0) == 0).float().mean())  # units silent on the whole batch
    if activation == "tanh":
        return float((a.abs() > SATURATION["tanh"]).float().mean())
    if activation == "sigmoid":
        return float(((a < 1 - SATURATION["sigmoid"]) | (a > SATURATION["sigmoid"])).float().mean())
    return None


def predict(model: nn.Module, weight_stds: list[float | None], images: torch.Tensor,
            grad_logits_std: float) -> list[dict[str, float | None]]:  # fmt: skip
    """Per layer: predicted pre-activation std, activation std and std of dL/d(activation), from the weight
    stds the initializer aims for (None = no closed form: no prediction), the measured second moment of the
    input and the measured std of the gradient at the logits."""
    layers = model.linear_layers()
    activation = model.activation_name
    q_input = float((images.double() ** 2).mean())  # E[x^2] per input feature
    predictions: list[dict[str, float | None]] = []
    second_moment = q_input
    qs: list[float | None] = []
    for index, layer in enumerate(layers):
        std = weight_stds[index]
        if std is None or second_moment is None:
            qs.append(None)
            predictions.append({"pre_std": None, "act_std": None})
            second_moment = None
            continue
        q = layer.in_features * std**2 * second_moment
        qs.append(q)
        last = index == len(layers) - 1
        if last:
            predictions.append({"pre_std": math.sqrt(q), "act_std": math.sqrt(q)})
        else:
            mean, mean_square, _ = gaussian_moments(activation, q)
            predictions.append(
                {"pre_std": math.sqrt(q), "act_std": math.sqrt(max(mean_square - mean**2, 0.0))}
            )
            second_moment = mean_square
    # Backwards from the measured gradient at the logits: Var(dL/da_l) = fan_out(l+1) * sigma_{l+1}^2 * Var(delta_{l+1}).
    grad_variance: float | None = grad_logits_std**2  # delta at the logits (no activation there)
    predictions[-1]["grad_act_std"] = grad_logits_std
    for index in range(len(layers) - 2, -1, -1):
        upper = layers[index + 1]
        std = weight_stds[index + 1]
        if grad_variance is None or std is None:
            grad_variance = None
            predictions[index]["grad_act_std"] = None
            continue
        grad_act_variance = upper.out_features * std**2 * grad_variance
        predictions[index]["grad_act_std"] = math.sqrt(grad_act_variance)
        q = qs[index]
        grad_variance = None if q is None else grad_act_variance * gaussian_moments(activation, q)[2]
    return predictions
