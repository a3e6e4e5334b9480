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
from scipy.optimize import brentq
from torch import nn

from initstudy.nn.model import MLP

# |tanh| > 0.99; sigmoid outside [0.01, 0.99]; |softsign| > 0.9 (softsign approaches its asymptotes
# polynomially, 1 - 1/(1 + |z|): 0.99 would need |z| = 99, where tanh's 0.99 needs |z| = 2.6).
SATURATION = {"tanh": 0.99, "sigmoid": 0.99, "softsign": 0.9}
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
    "softsign": (lambda z: z / (1 + np.abs(z)), lambda z: 1 / (1 + np.abs(z)) ** 2),
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
                dead_or_saturated=dead_or_saturated(a, activation),
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


def dead_or_saturated(a: torch.Tensor, activation: str) -> float | None:
    if activation in ("relu",):
        return float(((a > 0).sum(dim=0) == 0).float().mean())  # units silent on the whole batch
    if activation == "tanh":
        return float((a.abs() > SATURATION["tanh"]).float().mean())
    if activation == "sigmoid":
        return float(((a < 1 - SATURATION["sigmoid"]) | (a > SATURATION["sigmoid"])).float().mean())
    if activation == "softsign":
        return float((a.abs() > SATURATION["softsign"]).float().mean())
    return None


def predict(model: nn.Module, weight_stds: list[float | None], images: torch.Tensor,
            grad_logits_std: float, bias_vars: list[float] | None = None) -> list[dict[str, float | None]]:  # fmt: skip
    """Per layer: predicted pre-activation std, activation std and std of dL/d(activation), from the weight
    stds the initializer aims for (None = no closed form: no prediction), the bias variances (default zero),
    the measured second moment of the input and the measured std of the gradient at the logits."""
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
        q = layer.in_features * std**2 * second_moment + (bias_vars[index] if bias_vars else 0.0)
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


def bias_variances(model: MLP) -> list[float]:
    """Each Linear layer's bias second moment as the network has it (zero for the Keras-style initializers;
    ``nn.Linear``'s own uniform draw for torch_default): the sigma_b^2 of the mean-field recursion."""
    return [float((layer.bias.detach().double() ** 2).mean()) if layer.bias is not None else 0.0
            for layer in model.linear_layers()]  # fmt: skip


# ---- two inputs through depth: the correlation map (Poole et al. 2016; Schoenholz et al. 2017) -------------
PAIRS = 32  # the first 2 * PAIRS images of the fixed batch, paired (0, 1), (2, 3), ...
# Gauss-Hermite (probabilists') nodes for the bivariate expectations of smooth activations; ReLU-like ones
# (kinked) use their closed forms (the arc-cosine kernel of Cho & Saul 2009).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()
# Softsign is smooth but for a kink in its second derivative at 0 (|x|): Gauss-Hermite then converges only as
# n^-2 (64 nodes: 2e-3 relative error on E[phi^2]; 256: 1.4e-4). It gets 256 nodes in two dimensions and the
# dense grid of gaussian_moments in one.
_FINE_NODES, _FINE_WEIGHTS = np.polynomial.hermite_e.hermegauss(256)
_FINE_WEIGHTS = _FINE_WEIGHTS / _FINE_WEIGHTS.sum()
_KINKED = ("softsign",)


def _arccos_kernel(q_a: np.ndarray, q_b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """E[relu(u) relu(v)] for centred Gaussians with variances q_a, q_b and correlation c."""
    theta = np.arccos(np.clip(c, -1.0, 1.0))
    return np.sqrt(q_a * q_b) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))


def pair_expectation(activation: str, q_a: np.ndarray, q_b: np.ndarray, c: np.ndarray,
                     derivative: bool = False) -> np.ndarray:  # fmt: skip
    """E[f(u) f(v)], (u, v) centred Gaussian with variances q_a, q_b and correlation c (arrays, element-wise);
    f = phi, or phi' with ``derivative``."""
    q_a, q_b, c = (np.asarray(x, dtype=float) for x in (q_a, q_b, c))
    if activation == "linear":
        return np.sqrt(q_a * q_b) * c if not derivative else np.ones_like(c)
    if activation in ("relu", "leaky_relu"):
        slope = 0.01 if activation == "leaky_relu" else 0.0
        theta = np.arccos(np.clip(c, -1.0, 1.0))
        if (
            derivative
        ):  # E[step(u) step(v)] = (pi - theta) / 2pi; by symmetry E[step(-u) step(v)] = theta / 2pi
            same, crossed = (np.pi - theta) / (2 * np.pi), theta / (2 * np.pi)
            return same * (1 + slope**2) + 2 * slope * crossed
        return (1 + slope**2) * _arccos_kernel(q_a, q_b, c) - 2 * slope * _arccos_kernel(q_a, q_b, -c)
    phi, dphi = _NUMPY_ACTIVATIONS[activation]
    f = dphi if derivative else phi
    kinked = activation in _KINKED
    nodes, node_weights = (_FINE_NODES, _FINE_WEIGHTS) if kinked else (_GH_NODES, _GH_WEIGHTS)
    if np.all(c == 1.0) and np.array_equal(q_a, q_b):  # one variable: a one-dimensional rule suffices
        if kinked:
            return (f(np.sqrt(q_a)[..., None] * _NODES) ** 2) @ _WEIGHTS
        u = np.sqrt(q_a)[..., None] * nodes
        return (f(u) ** 2 * node_weights).sum(axis=-1)
    z1, z2 = nodes[:, None], nodes[None, :]
    weights = node_weights[:, None] * node_weights[None, :]
    c = np.clip(c, -1.0, 1.0)[..., None, None]
    u = np.sqrt(q_a)[..., None, None] * z1
    v = np.sqrt(q_b)[..., None, None] * (c * z1 + np.sqrt(1 - c**2) * z2)
    return (f(u) * f(v) * weights).sum(axis=(-2, -1))


def measure_correlations(model: MLP, images: torch.Tensor, pairs: int = PAIRS) -> np.ndarray:
    """[pairs, layers]: the cosine similarity of the two images' pre-activation vectors at every Linear layer
    (the logits last); NaN where a vector is zero."""
    with torch.no_grad():
        passed = model.forward_with_intermediates(images[: 2 * pairs])
    out = []
    for h in (*passed.pre_activations, passed.logits):
        a, b = h[0::2].double(), h[1::2].double()
        norms = a.norm(dim=1) * b.norm(dim=1)
        cosine = (a * b).sum(dim=1) / norms
        out.append(torch.where(norms > 0, cosine, torch.full_like(cosine, math.nan)).numpy())
    return np.stack(out, axis=1)


def predict_correlations(model: MLP, weight_stds: list[float | None], bias_vars: list[float],
                         images: torch.Tensor, pairs: int = PAIRS) -> np.ndarray:  # fmt: skip
    """[pairs, layers]: the mean-field prediction of :func:`measure_correlations` for the same image pairs:
    q^1_ab = s_1^2 x_a.x_b + v_1, then q^l_ab = n_{l-1} s_l^2 E[phi(u_a) phi(u_b)] + v_l, c^l = q^l_ab /
    sqrt(q^l_aa q^l_bb) (per-weight std s_l, bias variance v_l). NaN where a std has no closed form."""
    x = images[: 2 * pairs].double().numpy()
    xa, xb = x[0::2], x[1::2]
    out = np.full((len(xa), len(model.linear_layers())), math.nan)
    # Zero weights make 0/0 correlations: NaN is the answer there, not a warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        return _correlation_recursion(model, weight_stds, bias_vars, xa, xb, out)


def _correlation_recursion(model: MLP, weight_stds: list[float | None], bias_vars: list[float], xa: np.ndarray,
                           xb: np.ndarray, out: np.ndarray) -> np.ndarray:  # fmt: skip
    layers = model.linear_layers()
    q_aa = q_bb = q_ab = np.zeros(len(xa))
    for index, (layer, std, bias_var) in enumerate(zip(layers, weight_stds, bias_vars, strict=True)):
        if std is None:
            break
        if index == 0:
            q_aa = std**2 * (xa * xa).sum(1) + bias_var
            q_bb = std**2 * (xb * xb).sum(1) + bias_var
            q_ab = std**2 * (xa * xb).sum(1) + bias_var
        else:
            c = q_ab / np.sqrt(q_aa * q_bb)
            sigma_w2 = (
                layer.in_features * std**2
            )  # the mean-field weight variance (per-weight variance x fan-in)
            activation = model.activation_name
            q_ab = sigma_w2 * pair_expectation(activation, q_aa, q_bb, c) + bias_var
            q_aa = sigma_w2 * pair_expectation(activation, q_aa, q_aa, np.ones_like(c)) + bias_var
            q_bb = sigma_w2 * pair_expectation(activation, q_bb, q_bb, np.ones_like(c)) + bias_var
        out[:, index] = np.where(q_aa * q_bb > 0, q_ab / np.sqrt(q_aa * q_bb), math.nan)
    return out


@dataclass
class MeanField:
    """The infinitely wide network's fixed point for weight variance sigma_w^2 (times fan-in) and bias
    variance sigma_b^2 (Schoenholz et al. 2017): q*, c*, chi_1 (> 1: chaos, < 1: order), chi_c (the slope of
    the correlation map at c*) and the depth scale xi_c = -1/ln chi_c over which two inputs' correlation
    relaxes to c* (a small multiple of it bounds the trainable depth)."""

    q_star: float
    c_star: float
    chi_1: float
    chi_c: float
    xi_c: float


# Positively homogeneous activations (phi(a z) = a phi(z) for a > 0): E[phi(sqrt(q) z)^2] = q E[phi(z)^2], so the
# variance map is linear in q and its fixed point has a closed form.
_HOMOGENEOUS = ("relu", "leaky_relu", "linear")
# The smallest 1 - c at which the correlation map is evaluated when bracketing c* < 1: the quadrature resolves
# F(c) - c to ~1e-15, so the sign of (1 - chi_1)(1 - c) is still readable there when |1 - chi_1| > 1e-5.
_SMALLEST_GAP = 1e-9


def _variance_map(activation: str, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """One layer of the length map: q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2."""
    one = np.ones(1)
    return float(sigma_w2 * pair_expectation(activation, q * one, q * one, one)[0] + sigma_b2)


def fixed_point_q(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """q*: the fixed point of the length map that the recursion started at q = 1 converges to (the map is
    increasing in q for these activations, so it is the nearest fixed point in the direction of V(1) - 1).

    Closed form for homogeneous activations (q* = sigma_b^2 / (1 - sigma_w^2 E[phi(z)^2]); inf where the map
    has slope >= 1 and a positive intercept); otherwise Brent's method on V(q) - q over a bracket grown by
    doubling (upwards) or halving (downwards) from 1. 0 where no positive fixed point lies below 1."""
    if activation in _HOMOGENEOUS:
        slope = _variance_map(activation, sigma_w2, 0.0, 1.0)
        if slope < 1.0:
            return sigma_b2 / (1.0 - slope)
        if sigma_b2 == 0.0 and slope == 1.0:
            return 1.0  # every q is a fixed point: the start stays put
        return math.inf

    def gap(q: float) -> float:
        return _variance_map(activation, sigma_w2, sigma_b2, q) - q

    start = gap(1.0)
    if start == 0.0:
        return 1.0
    if start > 0:
        upper = 2.0
        while gap(upper) > 0:
            upper *= 2.0
            if upper > 1e12:
                return math.inf
        return float(brentq(gap, upper / 2, upper, xtol=1e-15, rtol=1e-14))
    lower = 0.5
    while gap(lower) < 0:
        lower /= 2.0
        if lower < 1e-300:
            return 0.0
    return float(brentq(gap, lower, lower * 2, xtol=1e-300, rtol=1e-14))


def fixed_point_c(activation: str, sigma_w2: float, sigma_b2: float, q_star: float, chi_1: float) -> float:
    """c*: the stable fixed point of the correlation map F(c) = (sigma_w^2 E[phi(u) phi(v)] + sigma_b^2) / q*.

    c = 1 is always a fixed point (F(1) = 1 by definition of q*), with slope F'(1) = chi_1. In the ordered
    phase (chi_1 <= 1) it is the stable one: c* = 1 exactly. In the chaotic phase c = 1 repels and F(c) - c
    is negative just below 1 (~ (1 - chi_1)(1 - c)); c* is where it turns positive again, bracketed on a
    geometric grid of 1 - c and solved by Brent's method."""
    if chi_1 <= 1.0 or not 0 < q_star < math.inf:
        return 1.0
    one = np.ones(1)

    def gap(c: float) -> float:
        mapped = sigma_w2 * pair_expectation(activation, q_star * one, q_star * one, c * one)[0] + sigma_b2
        return float(mapped / q_star - c)

    if gap(1.0 - _SMALLEST_GAP) >= 0:
        return 1.0  # chi_1 so close to 1 that c* is within the quadrature's resolution of 1
    previous = _SMALLEST_GAP
    for distance in np.geomspace(_SMALLEST_GAP, 2.0, 200)[1:]:
        if gap(1.0 - distance) >= 0:
            return float(brentq(gap, 1.0 - distance, 1.0 - previous, xtol=1e-15, rtol=1e-14))
        previous = distance
    return -1.0  # F(c) < c down to c = -1: the map pushes correlations to -1


def mean_field(activation: str, sigma_w2: float, sigma_b2: float) -> MeanField:
    """q*, c*, chi_1, chi_c and xi_c, each solved as a fixed point (closed form or a bracketing root finder),
    never by iterating the maps a fixed number of times: near the order/chaos boundary the correlation map
    relaxes over ~xi_c layers, so any fixed count stops short of c* exactly where xi_c matters most."""
    q = fixed_point_q(activation, sigma_w2, sigma_b2)
    one = np.ones(1)
    q_eval = 1.0 if activation in _HOMOGENEOUS else q  # homogeneous: phi' (and so chi) does not depend on q
    chi_1 = float(
        sigma_w2 * pair_expectation(activation, q_eval * one, q_eval * one, one, derivative=True)[0]
    )
    c = fixed_point_c(activation, sigma_w2, sigma_b2, q, chi_1)
    if c == 1.0:
        chi_c = chi_1  # the slope of the correlation map at c* = 1 is chi_1
    else:
        chi_c = float(sigma_w2 * pair_expectation(activation, q * one, q * one, c * one, derivative=True)[0])
    xi_c = -1.0 / math.log(chi_c) if 0 < chi_c < 1 else math.inf
    return MeanField(q_star=q, c_star=c, chi_1=chi_1, chi_c=chi_c, xi_c=xi_c)


# ---- dynamical isometry: the input-output Jacobian's singular values (Pennington et al. 2017) --------------
JACOBIAN_IMAGES = 8  # Jacobians at the first 8 images of the fixed batch, their singular values pooled
# Singular values below this share of a Jacobian's largest are below float64's resolution of the product (and
# exact zeros of dead ReLU paths among them): recorded as 0.
RESOLUTION = 1e-13


def jacobian_singular_values(model: MLP, images: torch.Tensor, count: int = JACOBIAN_IMAGES) -> np.ndarray:
    """The singular values of d(last hidden activation)/d(input) at each of ``count`` images, pooled (each
    Jacobian is width x 784: min(width, 784) values per image).

    J = D_L W_L ... D_1 W_1 with D_l = diag(phi'(h_l)), multiplied out in float64 from the output side (a
    batched matmul per layer; ~100x faster than ``torch.func.jacrev`` here). phi' comes from autograd on the
    network's own activation modules, so any element-wise activation works."""
    x = images[:count].detach()
    derivatives, weights = [], []
    with torch.enable_grad():
        for linear, activation in model.hidden:
            h = linear(x).detach().requires_grad_(True)
            out = activation(h)
            (slope,) = torch.autograd.grad(out.sum(), h)
            derivatives.append(slope.double())
            weights.append(linear.weight.detach().double())
            x = out.detach()
    jacobian = torch.diag_embed(derivatives[-1])  # [images, width, width]
    for index in range(len(weights) - 1, -1, -1):
        jacobian = jacobian @ weights[index]
        if index > 0:
            jacobian = jacobian * derivatives[index - 1][:, None, :]
    values = torch.linalg.svdvals(jacobian)
    values = torch.where(values < RESOLUTION * values[:, :1], torch.zeros_like(values), values)
    return values.flatten().numpy()


def predict_jacobian_mean_square(model: MLP, weight_stds: list[float | None], images: torch.Tensor,
                                 bias_vars: list[float] | None = None) -> float | None:  # fmt: skip
    """The mean squared singular value the recursion predicts: E||J v||^2 = prod_l n_l s_l^2 E[phi'(z_l)^2]
    for a unit input direction v, times 784 input directions, over min(width, 784) singular values."""
    hidden = model.linear_layers()[:-1]
    bias_vars = bias_vars or [0.0] * len(hidden)
    second_moment = float((images.double() ** 2).mean())
    gain = 1.0
    for layer, std, bias_var in zip(hidden, weight_stds, bias_vars, strict=False):
        if std is None:
            return None
        q = layer.in_features * std**2 * second_moment + bias_var
        _, second_moment, derivative = gaussian_moments(model.activation_name, q)
        gain *= layer.out_features * std**2 * derivative
    inputs, width = hidden[0].in_features, hidden[-1].out_features
    return gain * inputs / min(inputs, width)
