"""The network under study: a plain fully connected classifier, free of Lightning."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

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
}


class MLP(nn.Module):
    """``input -> [Linear -> activation] * len(hidden_sizes) -> Linear -> logits``.

    Layers are kept in ``hidden`` (pairs of Linear + activation) and ``head`` so that diagnostics can walk
    them in order; the softmax lives in the loss (cross-entropy on logits), as in Keras' from_logits path.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        activation: str = "relu",
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        sizes = [input_size, *hidden_sizes]
        self.activation_name = activation
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]())
            for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        for block in self.hidden:
            x = block(x)
        return self.head(x)

    def linear_layers(self) -> list[nn.Linear]:
        return [block[0] for block in self.hidden] + [self.head]
