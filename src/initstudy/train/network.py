"""M copies of one MLP architecture as one network: each layer's parameters stacked along a leading model axis.

A Linear layer of M members is one ``torch.baddbmm(bias[M, 1, out], x[M, B, in], weight[M, out, in]^T)``: on the
CPU (MKL, single thread, the portable profile) each member's slice is bit for bit the ``addmm`` that its own
``nn.Linear`` computes, forward and backward (checked by tests/test_stacked.py). ``bmm`` followed by a bias add,
``torch.func.vmap(functional_call)``, or weights stored as [M, in, out] round differently in the last bit. The
matmuls are the same FLOPs as M separate networks; what stacking saves is the per-step Python and Lightning
machinery and the small ops, paid once for M members, and (:class:`StackedLinear`) a transposed copy of every
weight gradient (docs/performance.md, docs/stacked.md).

The optimizer does not see the stacked tensors. It sees, per member, tensors of the single run's shapes that
alias the member's slice (:meth:`StackedMLP.member_parameters`), and whose gradients are views of the stacked
gradient (:meth:`StackedMLP.share_gradients`). Adam and SGD are elementwise, so an optimizer over them is each
member's own optimizer with its own state. Handing it the stacked tensors would be the same maths but not the
same bits: torch's fused CPU Adam runs the last ``numel % 8`` elements of each tensor through a scalar path
that rounds differently from its vector path, so a member whose slice does not start on a multiple of 8
(the head's bias: 10 elements) would round differently from its single run (seen). A frozen member (diverged)
gets no gradient, so the optimizer skips its tensors and its weights stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from initstudy.nn.model import ACTIVATIONS, MLP

# Activations whose scalar and vector kernels agree bit for bit (comparisons and one multiplication): applied to
# the whole stack at once. The others (exp, tanh, erf) run the last ``numel % (2 x vector width)`` elements of
# a tensor through a scalar kernel that rounds differently. Where a member's slice is a multiple of
# VECTOR_ALIGNMENT elements (64 x 128 activations: yes; the last batch of 17 x 30: no), each member starts and
# ends on a vector boundary, so the whole stack at once is each member's own kernel, forward and backward
# (one thread: the portable profile); otherwise it is applied per member, each member's tail its single run's.
# 64 covers AVX2 (2 x 8 floats per loop step) and AVX-512 (2 x 16).
STACKABLE_ACTIVATIONS = ("relu", "leaky_relu", "linear")
VECTOR_ALIGNMENT = 64


def layer_names(model: MLP) -> list[str]:
    """The state-dict prefixes of the model's Linear layers, input first (``hidden.0.0``, ..., ``head``)."""
    return [f"hidden.{index}.0" for index in range(len(model.hidden))] + ["head"]


class StackedLinear(torch.autograd.Function):
    """M Linear layers at once: ``baddbmm(bias, x, weight^T)`` forward, and a backward written out so that the
    weight gradient comes out in the weight's own [M, out, in] layout, as ``grad^T @ x`` per member (what
    ``nn.Linear``'s backward computes). Autograd's backward of the transposed view computes ``x^T @ grad`` and
    then copies it transposed into a zero-filled gradient: on the first layer (10 members, 784 x 256) the copy
    and fill took ~20 % of the step's time (measured with torch.profiler). Each member's forward, input, weight
    and bias gradients are bit for bit its own ``nn.Linear``'s (tests/test_stacked.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


class StackedMLP(nn.Module):
    """The members' MLPs (same sizes and activation), stacked; built from the members' initialized networks."""

    def __init__(self, members: Sequence[MLP]) -> None:
        super().__init__()
        first = members[0]
        self.size = len(members)
        self.names = layer_names(first)
        self.activation_name = first.activation_name
        self.activation = ACTIVATIONS[first.activation_name]()
        layers = [member.linear_layers() for member in members]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([layer[i].weight.detach() for layer in layers]).clone())
            for i in range(len(self.names))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([layer[i].bias.detach() for layer in layers]).clone())
            for i in range(len(self.names))
        )
        self._aliases: list[list[nn.Parameter]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [M, B, in] (each member its own batch) -> logits [M, B, classes]."""
        last = len(self.names) - 1
        # Under autocast (bf16-mixed) the plain op, which autocast casts as it casts nn.Linear's; the custom
        # backward is for full precision, where it gives each member nn.Linear's bytes.
        mixed = torch.is_autocast_enabled(x.device.type)
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if mixed:
                x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            else:
                x = StackedLinear.apply(x, weight, bias)
            if index < last:
                x = self._activate(x)
        return x

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_name in STACKABLE_ACTIVATIONS or x[0].numel() % VECTOR_ALIGNMENT == 0:
            return self.activation(x)
        # unbind, not x[m]: the backward of M selections would fill M zero gradients of the whole stack.
        return torch.stack([self.activation(part) for part in x.unbind(0)])

    def member_forward(self, m: int, x: torch.Tensor) -> torch.Tensor:
        """Member ``m`` alone on ``x`` [B, in], with exactly its single network's operations (evaluation)."""
        last = len(self.names) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = F.linear(x, weight[m], bias[m])
            if index < last:
                x = self.activation(x)
        return x

    def member_parameters(self) -> list[list[nn.Parameter]]:
        """Per member, its tensors in the single MLP's parameter order, aliasing the stacked storage. Made at
        the first call, i.e. in ``configure_optimizers``, once the network is on its device (moving it
        afterwards would leave them behind)."""
        if self._aliases is None:
            stacked = self._stacked()
            self._aliases = [[nn.Parameter(full.data[m]) for full in stacked] for m in range(self.size)]
        return self._aliases

    def _stacked(self) -> list[nn.Parameter]:
        return [p for weight, bias in zip(self.weights, self.biases, strict=True) for p in (weight, bias)]

    def share_gradients(self, active: Sequence[bool]) -> None:
        """After backward: each active member's aliases get views of the stacked gradients; a frozen member's
        get none, so the optimizer leaves its weights and state alone."""
        stacked = self._stacked()
        for m, aliases in enumerate(self.member_parameters()):
            for alias, full in zip(aliases, stacked, strict=True):
                alias.grad = full.grad[m] if active[m] and full.grad is not None else None

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s parameters in the single MLP's state-dict layout (``hidden.0.0.weight``, ...)."""
        state = {}
        for name, weight, bias in zip(self.names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = weight.detach()[m]
            state[f"{name}.bias"] = bias.detach()[m]
        return state


def shard_bounds(size: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous member ranges covering ``size`` members, sizes differing by at most one (the
    grouping's cut: :func:`initstudy.train.network.balanced`), never an empty one."""
    parts = balanced(range(size), max(1, min(count, size)))
    return [(part[0], part[-1] + 1) for part in parts]


class MemberShards(nn.Module):
    """A group's members as contiguous shards, each its own :class:`StackedMLP` (and, in the module, its own
    optimizer), so that each shard's whole step (forward, backward, update) runs on a thread of its own.

    Why threads over shards of one stack: under ``numerics=portable`` torch runs every op on one thread (its
    kernels, and so its bytes, do not depend on the core count), so one stack uses one core. Shards on N
    threads of one process use N cores with one copy of the libraries (~1.2 GB resident for torch, Lightning
    and MLflow) and of the data, where N worker processes hold N copies. A member's operations are the same
    whether its shard holds 1 or M members (each member's slice of a batched kernel is its own kernel:
    :class:`StackedMLP`), so the shard count changes no byte (tests/test_stacked.py)."""

    def __init__(self, members: Sequence[MLP], count: int = 1) -> None:
        super().__init__()
        self.size = len(members)
        self.bounds = shard_bounds(self.size, count)
        self.shards = nn.ModuleList(StackedMLP(members[start:end]) for start, end in self.bounds)
        self._where = [
            (k, m - start) for k, (start, end) in enumerate(self.bounds) for m in range(start, end)
        ]

    def locate(self, m: int) -> tuple[StackedMLP, int]:
        """Member ``m``'s shard and its index there."""
        k, local = self._where[m]
        return self.shards[k], local  # type: ignore[return-value]

    def member_forward(self, m: int, x: torch.Tensor) -> torch.Tensor:
        shard, local = self.locate(m)
        return shard.member_forward(local, x)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        shard, local = self.locate(m)
        return shard.member_state(local)


def balanced(indices: Sequence[int], count: int) -> list[list[int]]:
    """``indices`` cut into ``count`` consecutive parts whose sizes differ by at most one (larger first)."""
    size, extra = divmod(len(indices), count)
    parts, start = [], 0
    for part in range(count):
        end = start + size + (part < extra)
        parts.append(list(indices[start:end]))
        start = end
    return parts
