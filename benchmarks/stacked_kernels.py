"""Which stacked kernel for M MLPs on the CPU? ``python benchmarks/stacked_kernels.py [--members 8]``

One optimizer step's forward and backward (784-256-128-10, batch 64, one thread, the portable profile), for M
members: one after the other (M ``nn.Linear`` networks: the single runs), stacked with ``torch.baddbmm``
(initstudy.train.network), and ``torch.func.vmap(functional_call)`` over ``stack_module_state``. Prints the
median milliseconds per step (fastest of a few rounds) and whether each member's gradients are bit for bit
its single network's. Synthetic tensors, no data files.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from initstudy.config import numerics

numerics.apply_before_torch(numerics.load("portable", Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from initstudy.nn.model import MLP  # noqa: E402
from initstudy.train.network import StackedMLP  # noqa: E402


def timed(step: Callable[[], list[torch.Tensor]], repeats: int, rounds: int = 3) -> float:
    """Median milliseconds of ``step`` over ``repeats`` calls, the fastest of ``rounds`` rounds."""
    best = float("inf")
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        best = min(best, statistics.median(times))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    numerics.apply_in_process(numerics.load("portable", Path(__file__).resolve().parents[1]))
    m, batch = args.members, 64
    models = []
    for seed in range(m):
        torch.manual_seed(seed)
        models.append(MLP([256, 128]))
    x, y = torch.rand(m, batch, 784), torch.randint(0, 10, (m, batch))

    def sequential() -> list[torch.Tensor]:
        grads = []
        for member, net in enumerate(models):
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[member]), y[member]).backward()
            grads.append(net.head.weight.grad)
        return grads

    stacked = StackedMLP(models)

    def baddbmm() -> list[torch.Tensor]:
        stacked.zero_grad(set_to_none=True)
        logits = stacked(x)
        torch.stack([F.cross_entropy(logits[i], y[i]) for i in range(m)]).sum().backward()
        return list(stacked.weights[-1].grad)

    params, buffers = stack_module_state([copy.deepcopy(net) for net in models])
    base = copy.deepcopy(models[0]).to("meta")

    def vmapped() -> list[torch.Tensor]:
        for tensor in params.values():
            tensor.grad = None
        logits = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)))(params, buffers, x)
        torch.stack([F.cross_entropy(logits[i], y[i]) for i in range(m)]).sum().backward()
        return list(params["head.weight"].grad)

    reference = [g.clone() for g in sequential()]
    print(
        f"{m} members, batch {batch}, {torch.get_num_threads()} thread(s): ms per step (forward + backward)"
    )
    for name, step in (("sequential", sequential), ("baddbmm", baddbmm), ("vmap", vmapped)):
        bitwise = all(torch.equal(a, b) for a, b in zip(step(), reference, strict=True))
        print(f"  {name:<10} {timed(step, args.repeats):8.2f}   bitwise={bitwise}")


if __name__ == "__main__":
    main()
