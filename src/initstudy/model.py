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


class MLP(nn.Module):
    """``input -> [Linear -> activation] * len(hidden_sizes) -> Linear -> logits``.

    Layers are kept in ``hidden`` (pairs of Linear + activation) and ``head`` so that diagnostics can walk
    them in order; the softmax lives in the loss (cross-entropy on logits), as in Keras' from_logits path.
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

    def forward(self, x):
        for block in self.hidden:
            x = block(x)
        return self.head(x)

    def linear_layers(self) -> list[nn.Linear]:
        return [block[0] for block in self.hidden] + [self.head]
