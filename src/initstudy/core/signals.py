"""Stop signals (SIGTERM, SIGINT, SIGHUP): one owner for how every entry point ends when it is told to stop.

Why: schedulers (SLURM time limits, CI timeouts, ``kill``, a closed terminal) stop a process with these
signals, and DVC records a stage as done when its command exits 0. Left to the libraries, SIGTERM during a fit
was swallowed by Lightning (its loops raise ``SIGTERMException``, a ``SystemExit`` with no code: exit 0) and
SIGINT became ``sys.exit(1)``, a FAILED run. Here each stop signal raises :class:`Interrupted`, a
``BaseException`` (so that no ``except Exception`` swallows it) carrying the signal; the cleanup on its way out
marks the runs it interrupts KILLED (initstudy.train.runner, initstudy.sweep.preflight, initstudy.tracking),
and :func:`stopping_exits` ends the program with status 128 + the signal's number, as a shell reports it.

Lightning's own SIGTERM handler calls the handler it found in place, so this one still runs during a fit.
SIGUSR1/SIGUSR2 are left alone: a SLURM requeue (submitit's SIGUSR2 handler) works as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(BaseException):
    """A stop signal arrived: raised in the main thread by the handler :func:`stopping_exits` installs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}"


# What counts as "interrupted, not failed" for a run's final status: a stop signal, Ctrl+C reaching Python
# some other way, and the SystemExits libraries raise when they stop a process on a signal (submitit's
# requeue on SIGUSR2, Lightning's SIGTERMException and its KeyboardInterrupt path).
INTERRUPTIONS: tuple[type[BaseException], ...] = (Interrupted, KeyboardInterrupt, SystemExit)

_depth = 0  # nested stopping_exits in this process (a launcher running the job in-process)
_stopping: int | None = None  # the first stop signal received; later ones wait for its cleanup


def is_interruption(error: BaseException | None) -> bool:
    return isinstance(error, INTERRUPTIONS)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The first stop signal raises; a second one while the first's cleanup runs (a repeated Ctrl+C, a
    scheduler's reminder) is logged and ignored, so that the runs are still marked KILLED."""
    global _stopping
    if _stopping is not None:
        log.warning("%s received while stopping on %s: finishing the clean-up first",
                    signal.Signals(signum).name, signal.Signals(_stopping).name)  # fmt: skip
        return
    _stopping = signum
    raise Interrupted(signum)


def _install() -> dict[int, Any]:
    previous = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _raise_interrupted)
    return previous


@contextlib.contextmanager
def stopping_exits(program: str) -> Iterator[None]:
    """Around an entry point's main: stop signals raise :class:`Interrupted` inside; one that escapes ends
    the process with one line on stderr and exit status 128 + its number (after the cleanup it passed
    through). Nested uses (a job run inside its launcher's process) leave the outer one in charge; outside
    the main thread (signals cannot be handled there) it does nothing. The previous handlers are restored."""
    global _depth, _stopping
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, _stopping = _install(), None
    _depth += 1
    try:
        yield
    except Interrupted as interrupted:
        print(f"{program}: {interrupted}; exit status {interrupted.exit_status}", file=sys.stderr, flush=True)
        raise SystemExit(interrupted.exit_status) from None
    finally:
        _depth -= 1
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _stopping = None


def entry_point(program: str) -> Callable[[F], F]:
    """Decorator for an entry point's ``main``: it runs inside :func:`stopping_exits`."""

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with stopping_exits(program):
                return main(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate
