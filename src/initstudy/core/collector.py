"""Python's cycle collector without full collections while a training process starts, and what start-up built
frozen for training.

Why: importing torch, Lightning and MLflow leaves ~1.1 million objects that live as long as the process
(modules, classes, functions, MLflow's store). The collector's full collections walk all of them, and the
imports trigger several (8 in one process that imports torch, Lightning, pandas and MLflow and opens its
SQLite store): ~1 s of that start-up's 5.1 s of CPU (measured with full collections left out: 4.3 s; with
the collector off: 4.1 s). A full collection once everything is imported costs ~0.45 s; it finds ~15,000
objects of garbage among the imports.

So a process starts (:func:`start_up`) with full collections put off (the third threshold raised), while the
young generations are still collected: the garbage a start-up makes besides its imports (Hydra composing
every job of a sweep, ~360,000 objects for the 20-run study) is freed as it appears; with the collector off
altogether it stayed and raised the sweep's peak memory by ~60 MiB. When training starts
(:func:`training_started`) everything alive is moved to the permanent generation (``gc.freeze``: a list splice,
never scanned again) and the thresholds are restored. When the job ends (:func:`thaw`) the frozen objects are
thawed (``gc.unfreeze``), so that the next job's collection (``runner.collect_previous_run``) can free this job's
data in a launcher that runs many jobs in one process. Only public ``gc`` functions; no number a run computes
depends on any of this (only when memory is freed).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# The third threshold (gen1 collections between two full ones) while starting: never reached.
FULL_COLLECTIONS_PUT_OFF = 1 << 30

_thresholds: tuple[int, int, int] | None = None  # the thresholds before pause(), while start-up runs
_frozen = False  # this module froze the objects alive when training started, and has not thawed them


def pause() -> None:
    """No full collection until :func:`training_started` (nothing if the collector is off: someone else's
    choice, or if start-up is already paused)."""
    global _thresholds
    if gc.isenabled() and _thresholds is None:
        _thresholds = gc.get_threshold()
        gc.set_threshold(_thresholds[0], _thresholds[1], FULL_COLLECTIONS_PUT_OFF)


def paused() -> bool:
    return _thresholds is not None


def training_started() -> None:
    """Freeze what start-up left alive and restore the thresholds; nothing unless :func:`pause` paused."""
    global _thresholds, _frozen
    if _thresholds is not None:
        gc.freeze()
        _frozen = True
        gc.set_threshold(*_thresholds)
        _thresholds = None


def thaw() -> None:
    """The collector as it was before :func:`pause`, and what :func:`training_started` froze collectable again."""
    global _thresholds, _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False
    if _thresholds is not None:
        gc.set_threshold(*_thresholds)
        _thresholds = None


@contextmanager
def start_up() -> Iterator[None]:
    """Around a process's or a job's start (and its training): paused until training starts, thawed at the end
    whatever happened. Nested uses are fine: an inner one thaws at its end (a job's objects become collectable
    when the job ends), an outer one then finds nothing to do."""
    pause()
    try:
        yield
    finally:
        thaw()
