"""The network under study: a plain fully connected classifier, free of Lightning."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
    "softsign": nn.Softsign,  # x / (1 + |x|): Glorot & Bengio 2010's alternative to tanh
}


def resolve_hidden_sizes(
    hidden_sizes: Sequence[int] | None, depth: int | None, width: int | None
) -> list[int]:
    """An explicit list, or ``depth`` hidden layers of ``width`` units (for depth sweeps): exactly one of them."""
    if hidden_sizes is not None and depth is None and width is None:
        return list(hidden_sizes)
    if hidden_sizes is None and depth is not None and width is not None:
        return [width] * depth
    raise ValueError(
        "give either model.hidden_sizes (a list) or model.depth and model.width, not both, "
        f"got hidden_sizes={hidden_sizes}, depth={depth}, width={width}"
    )


@dataclass
class Intermediates:
    """What one forward pass computed, layer by layer: the tensors themselves (still in the autograd graph
    when the pass was), so that a caller can read statistics or ask for their gradients."""

    pre_activations: list[torch.Tensor]  # per hidden layer: Linear output, before the activation
    activations: list[torch.Tensor]  # per hidden layer: the activation's output, the next layer's input
    logits: torch.Tensor  # the head's output


class MLP(nn.Module):
    """``input -> [Linear -> activation] * len(hidden_sizes) -> Linear -> logits``.

    Layers are kept in ``hidden`` (pairs of Linear + activation) and ``head``; :meth:`forward_with_intermediates`
    is the one walk that hands out what flows between them (diagnostics, LSUV). The softmax lives in the loss
    (cross-entropy on logits), as in Keras' from_logits path.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] | None = None,
        activation: str = "relu",
        input_size: int = 784,
        num_classes: int = 10,
        depth: int | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        hidden_sizes = resolve_hidden_sizes(hidden_sizes, depth, width)
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        sizes = [input_size, *hidden_sizes]
        self.activation_name = activation
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]())
            for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not through forward_with_intermediates: training and evaluation must not hold every layer's output
        # until the pass ends (a 30-layer net on a 10,000-image evaluation batch: ~300 MB more at the peak).
        for block in self.hidden:
            x = block(x)
        return self.head(x)

    def forward_with_intermediates(self, x: torch.Tensor) -> Intermediates:
        """The forward pass, keeping every hidden layer's pre-activation and activation: diagnostics measure
        them, LSUV feeds each layer the activations below it. Same operations, same bits as ``forward``."""
        pre_activations, activations = [], []
        for linear, activation in self.hidden:
            pre_activations.append(linear(x))
            x = activation(pre_activations[-1])
            activations.append(x)
        return Intermediates(pre_activations, activations, self.head(x))

    def linear_layers(self) -> list[nn.Linear]:
        """The Linear layers from input to output (the head last): what initializers and predictions read."""
        return [block[0] for block in self.hidden] + [self.head]
