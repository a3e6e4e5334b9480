"""Adam as Keras computes it, for runs that must match a Keras model's optimizer and not only its settings.

Keras and PyTorch both call their constant "epsilon", but add it at different places. Keras folds the bias
corrections into the step size and adds epsilon to the uncorrected sqrt(v):

    alpha_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    p      -= alpha_t * m_t / (sqrt(v_t) + eps)

PyTorch (``torch.optim.Adam``) adds it to the bias-corrected one:

    p      -= lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

Dividing Keras' numerator and denominator by sqrt(1 - beta2^t) shows that Keras' eps is PyTorch's eps / sqrt(1 -
beta2^t): with Keras' default 1e-7 and beta2 = 0.999 that is 3.2e-6 at step 1, 1e-6 at step 10 and ~2.6e-7
at step 157, approaching 1e-7 only after thousands of steps. Setting ``eps=1e-7`` on ``torch.optim.Adam`` is
therefore not Keras' Adam: it damps the early steps of small gradients less than Keras does, in the very
range where a gradient's size against eps decides whether a network moves (docs/depth.md).

The rule is elementwise, so one optimizer over several networks' stacked tensors is each network's own
optimizer (initstudy.stacked). ``weight_decay`` is decoupled as in Keras (p -= lr * wd * p before the step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras' placement of epsilon (see the module docstring); the defaults are Keras'."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, eps and weight_decay must be non-negative, not {lr}, {eps}, {weight_decay}"
            )
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1), not {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v, grad = state["m"], state["v"], param.grad
                if group["weight_decay"]:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
                m.lerp_(grad, 1 - beta1)  # m += (g - m)(1 - beta1), as Keras writes it
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                alpha = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                param.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-alpha)
        return loss
