"""Limits on untrusted input: a wall-clock deadline, bounded reads and bounded gzip decompression.

A source may be slow, endless or hostile. Per-read socket timeouts do not bound a server that sends one byte
every few seconds, and ``gzip.decompress`` allocates whatever a 20 KB "gzip bomb" expands to. So every
source runs under a :class:`Deadline`, reads at most ``cap + 1`` bytes (one more proves "too big" without
holding it), and decompresses with ``zlib.decompressobj(...).decompress(data, max_length)``.
Neither the standard library (``gzip``, ``urllib``) nor the HTTP clients in the environment (requests,
urllib3) offer a size cap on a body or on a decompression's output, hence these few lines.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer (CRC-32, size), checked by zlib
_CHUNK = 1 << 16


class LimitExceeded(ValueError):
    """Input larger than its cap; refused before more of it is read or allocated."""


class CorruptGzip(ValueError):
    """Truncated or damaged gzip data."""


class DeadlineExceeded(TimeoutError):
    """A source took longer, in all, than the deadline allows."""


class Deadline:
    """A wall-clock budget for one source: connect, headers, every body, decompression."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"deadline of {self.seconds:g} s exceeded")

    def budget(self, timeout_s: float) -> float:
        """The time the next blocking step may take: the per-step timeout, or less near the deadline."""
        self.check()
        return min(timeout_s, self.remaining())


def compressed_cap(cap: int) -> int:
    """Largest acceptable .gz body for ``cap`` uncompressed bytes: gzip of incompressible data adds
    ~0.01 % plus a header, so 1 % + 4 KiB is generous and still bounded."""
    return cap + cap // 100 + 4096


def read_bounded(
    read1: Callable[[int], bytes],
    cap: int,
    what: str,
    deadline: Deadline | None = None,
    progress: Callable[[int], object] | None = None,
) -> bytes:
    """Read from ``read1`` (returns after at most one underlying read) until EOF, at most ``cap`` bytes.

    ``read1`` rather than ``read``: a buffered ``read(n)`` keeps waiting for all ``n`` bytes, so a server
    dripping bytes would never let the deadline be checked.
    """
    chunks: list[bytes] = []
    total = 0
    while chunk := read1(min(_CHUNK, cap + 1 - total)):
        total += len(chunk)
        if total > cap:
            raise LimitExceeded(f"{what} is larger than {cap:,} bytes; refused")
        chunks.append(chunk)
        if progress is not None:
            progress(len(chunk))
        if deadline is not None:
            deadline.check()
    return b"".join(chunks)


def gunzip_bounded(data: bytes, cap: int, what: str) -> bytes:
    """Decompress gzip ``data`` (one or more members) into at most ``cap`` bytes, else refuse."""
    members: list[bytes] = []
    total = 0
    pending = data
    while pending := pending.lstrip(b"\0"):  # zero padding after a member is allowed, as gzip does
        if pending[:2] != GZIP_MAGIC:
            where = "after the last member" if members else "at the start"
            raise CorruptGzip(f"{what} is not a readable gzip file: no gzip signature {where}")
        decompressor = zlib.decompressobj(_GZIP_WBITS)
        try:
            member = decompressor.decompress(pending, cap + 1 - total)
        except zlib.error as error:
            raise CorruptGzip(f"{what} is not a readable gzip file: {error}") from None
        total += len(member)
        if total > cap:
            raise LimitExceeded(f"{what} decompresses to more than {cap:,} bytes; refused")
        if not decompressor.eof:
            raise CorruptGzip(f"{what} is not a readable gzip file: truncated")
        members.append(member)
        pending = decompressor.unused_data
    return members[0] if len(members) == 1 else b"".join(members)  # one member (the usual): no copy


def maybe_gunzip(data: bytes, cap: int, what: str) -> bytes:
    """``data`` decompressed if it is gzip, as is otherwise; at most ``cap`` bytes either way."""
    if data[:2] == GZIP_MAGIC:
        return gunzip_bounded(data, cap, what)
    if len(data) > cap:
        raise LimitExceeded(f"{what} is larger than {cap:,} bytes; refused")
    return data
