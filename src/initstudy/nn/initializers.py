"""Weight initializers, each a Hydra option under ``conf/init/`` and built on ``torch.nn.init``.

Semantics follow Keras where Keras has the same name, so that the seed notebook is reproduced:
kernels are drawn by the initializer, biases start at zero (or, with ``bias_std`` > 0, are drawn from
N(0, bias_std^2): the sigma_b of the mean-field analyses, Schoenholz et al. 2017), and the "normal"
variance-scaling variants (Glorot/He/LeCun normal) are normals truncated at two standard deviations whose
std is divided by 0.87962566103423978 (the std of a unit normal truncated to [-2, 2]) so that the
*resulting* variance is ``scale / fan``. ``torch_default`` keeps ``nn.Linear``'s own initialization, biases included.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import nn

# Std of a standard normal truncated to [-2, 2]; Keras divides by it so the truncated draw has the target std.
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978

FanMode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "untruncated_normal", "uniform"]


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) exactly as torch and Keras count them: a (fan_out, fan_in, *receptive field) kernel.
    Counted here because torch's own counter (``nn.init._calculate_fan_in_and_fan_out``) is private."""
    if weight.dim() < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions, got shape {tuple(weight.shape)}")
    receptive_field = weight[0][0].numel()
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def _number(key: str, value: object, low: float | None = None, strict: bool = False) -> float:
    """``value`` as a real number (not a bool or string) at or above ``low`` (above, when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"init.{key}={value!r} must be a finite number")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"init.{key}={value!r} must be {'>' if strict else '>='} {low}")
    return float(value)


def _integer(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"init.{key}={value!r} must be an integer >= {low}")
    return value


class Initializer(ABC):
    """Initializes every ``nn.Linear`` of a model in place (applied through ``model.apply``)."""

    #: Data-dependent initializers (LSUV) need a batch of training inputs.
    needs_data = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, model: nn.Module, batch: torch.Tensor | None = None) -> nn.Module:
        model.apply(self._apply_to_module)
        return model

    def _apply_to_module(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                self.init_linear(module)

    @abstractmethod
    def init_linear(self, layer: nn.Linear) -> None:
        """Fill one layer's weight and bias in place."""

    def expected_weight_std(self, weight: torch.Tensor) -> float | None:
        """The std this initializer aims for on ``weight`` (None when it has no closed form)."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class KernelInitializer(Initializer):
    """Keras' split: the initializer draws the kernel, biases start at zero; with ``bias_std`` > 0 they are
    drawn from N(0, bias_std^2) right after their layer's kernel (0, the default, draws nothing, so the random
    stream of every zero-bias configuration is what it always was)."""

    def __init__(self, name: str, bias_std: float = 0.0) -> None:
        super().__init__(name)
        self.bias_std = _number("bias_std", bias_std, 0.0)

    def init_linear(self, layer: nn.Linear) -> None:
        self.init_weight(layer.weight)
        if layer.bias is None:
            return
        if self.bias_std > 0:
            nn.init.normal_(layer.bias, mean=0.0, std=self.bias_std)
        else:
            nn.init.zeros_(layer.bias)

    @abstractmethod
    def init_weight(self, weight: torch.Tensor) -> None:
        """Fill a (fan_out, fan_in) weight in place."""


class Zeros(KernelInitializer):
    """All weights zero: every hidden unit of a layer computes the same function and gets the same update."""

    def init_weight(self, weight: torch.Tensor) -> None:
        nn.init.zeros_(weight)

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        return 0.0


class RandomNormal(KernelInitializer):
    """N(mean, std^2), independent of layer size (Keras ``RandomNormal``; the seed notebook uses std 0.01)."""

    def __init__(self, name: str, std: float = 0.01, mean: float = 0.0, bias_std: float = 0.0) -> None:
        super().__init__(name, bias_std)
        self.std, self.mean = _number("std", std, 0.0), _number("mean", mean)

    def init_weight(self, weight: torch.Tensor) -> None:
        nn.init.normal_(weight, mean=self.mean, std=self.std)

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        return self.std


class TruncatedNormal(KernelInitializer):
    """N(mean, std^2) redrawn outside mean +- 2 std (Keras ``TruncatedNormal``: std is before truncation)."""

    def __init__(self, name: str, std: float = 0.05, mean: float = 0.0, bias_std: float = 0.0) -> None:
        super().__init__(name, bias_std)
        self.std, self.mean = _number("std", std, 0.0), _number("mean", mean)

    def init_weight(self, weight: torch.Tensor) -> None:
        low, high = self.mean - 2 * self.std, self.mean + 2 * self.std
        nn.init.trunc_normal_(weight, mean=self.mean, std=self.std, a=low, b=high)

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        return self.std * TRUNCATED_NORMAL_STD_CORRECTION


class VarianceScaling(KernelInitializer):
    """Keras' ``VarianceScaling``: Var(w) = scale / fan, the family behind Glorot, He and LeCun.

    ``mode`` picks the fan (``fan_avg`` = (fan_in + fan_out) / 2 for Glorot, ``fan_in`` for He and LeCun);
    ``scale`` is 1 for Glorot/LeCun and 2 for He (the ReLU gain squared).
    """

    def __init__(
        self,
        name: str,
        scale: float = 1.0,
        mode: FanMode = "fan_in",
        distribution: Distribution = "uniform",
        bias_std: float = 0.0,
    ) -> None:
        super().__init__(name, bias_std)
        scale = _number("scale", scale, 0.0, strict=True)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"init.mode {mode!r} is not one of fan_in, fan_out, fan_avg")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                f"init.distribution {distribution!r} is not one of truncated_normal, untruncated_normal, uniform"
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def fan(self, weight: torch.Tensor) -> float:
        fan_in, fan_out = fans(weight)
        return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        return math.sqrt(self.scale / self.fan(weight))

    def init_weight(self, weight: torch.Tensor) -> None:
        std = self.expected_weight_std(weight)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0) * std
            nn.init.uniform_(weight, -limit, limit)
        elif self.distribution == "untruncated_normal":
            nn.init.normal_(weight, 0.0, std)
        else:
            raw_std = std / TRUNCATED_NORMAL_STD_CORRECTION
            nn.init.trunc_normal_(weight, 0.0, raw_std, a=-2 * raw_std, b=2 * raw_std)


class Orthogonal(KernelInitializer):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014): preserves norms in linear networks."""

    def __init__(self, name: str, gain: float = 1.0, bias_std: float = 0.0) -> None:
        super().__init__(name, bias_std)
        self.gain = _number("gain", gain, 0.0, strict=True)

    def init_weight(self, weight: torch.Tensor) -> None:
        nn.init.orthogonal_(weight, gain=self.gain)

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        fan_in, fan_out = fans(weight)
        return self.gain / math.sqrt(max(fan_in, fan_out))


class Standard(KernelInitializer):
    """Glorot & Bengio (2010), eq. 1, their "standard" initialization: W ~ U[-1/sqrt(fan_in), 1/sqrt(fan_in)],
    biases zero (Var(W) = 1/(3 fan_in)). Not ``torch_default``: nn.Linear draws its weights from the same
    bounds but its biases too, from U[-1/sqrt(fan_in), 1/sqrt(fan_in)]."""

    def init_weight(self, weight: torch.Tensor) -> None:
        fan_in, _ = fans(weight)
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(weight, -bound, bound)

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        fan_in, _ = fans(weight)
        return 1.0 / math.sqrt(3.0 * fan_in)


class TorchDefault(Initializer):
    """``nn.Linear.reset_parameters``: Kaiming-uniform with a=sqrt(5) (bound 1/sqrt(fan_in)), biases too."""

    def init_linear(self, layer: nn.Linear) -> None:
        layer.reset_parameters()

    def expected_weight_std(self, weight: torch.Tensor) -> float:
        fan_in, _ = fans(weight)
        return 1.0 / math.sqrt(3.0 * fan_in)


class LSUV(Orthogonal):
    """Layer-sequential unit-variance init (Mishkin & Matas, 2016): an orthonormal start, then, layer by layer
    from the input, the weights are rescaled until the layer's output (pre-activation) variance on a batch of
    training data is 1 within ``tolerance``, at most ``max_iterations`` times per layer. Biases stay zero."""

    needs_data = True

    def __init__(
        self,
        name: str,
        gain: float = 1.0,
        tolerance: float = 0.05,
        max_iterations: int = 10,
        batch_size: int = 512,
    ) -> None:
        super().__init__(name, gain)
        tolerance = _number("tolerance", tolerance, 0.0, strict=True)
        if tolerance >= 1:
            raise ValueError(f"init.tolerance={tolerance!r} must be in (0, 1)")
        self.tolerance = tolerance
        self.max_iterations = _integer("max_iterations", max_iterations, 1)
        self.batch_size = _integer("batch_size", batch_size, 2)
        self.achieved: list[float] = []  # output variance reached per layer (for diagnostics and tests)

    def __call__(self, model: nn.Module, batch: torch.Tensor | None = None) -> nn.Module:
        """Walk the layers in order, feeding each the (final) output of the ones before it."""
        if batch is None:
            raise ValueError("LSUV needs a batch of training inputs")
        super().__call__(model)
        self.achieved = []
        with torch.no_grad():
            for index, layer in enumerate(model.linear_layers()):
                # The layer's input through the layers below it, each already rescaled (one pass per layer).
                x = model.forward_with_intermediates(batch).activations[index - 1] if index else batch
                self.achieved.append(self._rescale(layer, x))
        return model

    def _rescale(self, layer: nn.Linear, x: torch.Tensor) -> float:
        """Divide ``layer``'s weights by the std of its output on ``x`` until that variance is 1; the variance
        reached (0 for a layer whose output is constant)."""
        z = layer(x)
        for _ in range(self.max_iterations):
            variance = float(z.var())
            if abs(variance - 1.0) < self.tolerance or variance == 0.0:
                break
            layer.weight.div_(math.sqrt(variance))
            z = layer(x)
        return float(z.var())

    def expected_weight_std(self, weight: torch.Tensor) -> float | None:
        return None  # data-dependent: no closed form
