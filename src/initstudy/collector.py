"""Python's cycle collector paused while a training process starts, and what start-up built frozen for training.

Why: importing torch, Lightning and MLflow leaves ~1.1 million objects that live as long as the process
(modules, classes, functions, MLflow's store). With the collector on, every full collection on the way walks
all of them, and imports trigger many: ~1 s of CPU of a run's start-up (in one process, `import torch,
pytorch_lightning, pandas, mlflow` and MLflow's SQLite store: 5.1 s with the collector on, 4.1 s off), and a
full collection after start-up costs ~0.45 s. None of it is garbage worth finding (~15,000 objects).

So a process pauses the collector from its start (:func:`start_up`) until training starts
(:func:`training_started`); then everything alive is moved to the permanent generation (``gc.freeze``: a list
splice, never scanned again) and the collector resumes for what training allocates. When the job ends, the
frozen objects are thawed (``gc.unfreeze``), so that the next job's collection
(``runner.collect_previous_run``) can free this job's data in a launcher that runs many jobs in one process.
Only public ``gc`` functions; the process's numbers do not depend on any of this (only when memory is freed).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False  # this module turned the collector off, and training has not started since
_frozen = False  # this module froze the objects alive when training started, and has not thawed them


def pause() -> None:
    """The collector off until :func:`training_started` (nothing if it is off already: someone else's)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def training_started() -> None:
    """Freeze what start-up left alive and turn the collector back on; nothing unless :func:`pause` paused it."""
    global _paused, _frozen
    if _paused:
        gc.freeze()
        _frozen = True
        gc.enable()
        _paused = False


def thaw() -> None:
    """The collector as it was before :func:`pause`, and what :func:`training_started` froze collectable again."""
    global _paused, _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False
    if _paused:
        gc.enable()
        _paused = False


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
