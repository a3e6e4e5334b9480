"""One function per shard of a stacked group, on as many threads at once: the calling thread takes shard 0.

torch releases the GIL inside its kernels, and under ``numerics=portable`` runs each kernel on the thread that
calls it (one intra-op thread), so shards on N threads keep N cores busy, each member's bytes unchanged
(initstudy.train.network.MemberShards). Per-thread state is set on each new thread as the creating thread has
it: flush-to-zero of subnormals (CPU state per thread, the numerics profile's; a thread with another mode
computes other numbers in networks whose signal underflows: tests/test_stacked.py). Grad mode is per thread
too: work that must not record a graph (the evaluations) enters ``torch.no_grad()`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")


def subnormals_flushed() -> bool:
    """Whether this thread flushes subnormal results to zero (an exactly subnormal product, on this thread)."""
    return float(torch.tensor(1e-30) * 1e-10) == 0.0


class ShardThreads:
    def __init__(self, count: int) -> None:
        self.count = count
        self._pool = (
            ThreadPoolExecutor(
                count - 1,
                thread_name_prefix="shard",
                initializer=torch.set_flush_denormal,
                initargs=(subnormals_flushed(),),
            )
            if count > 1
            else None
        )

    def map(self, work: Callable[[int], T]) -> list[T]:
        """``work(k)`` for every shard ``k``, at once; the results in shard order. Every shard has finished
        before this returns or raises (the first error, in shard order), so that none is still writing."""
        if self._pool is None:
            return [work(k) for k in range(self.count)]
        futures = [self._pool.submit(work, k) for k in range(1, self.count)]
        try:
            first = work(0)
        finally:
            wait(futures)
        return [first, *(future.result() for future in futures)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
