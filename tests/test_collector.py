"""The cycle collector through start-up (initstudy.core.collector): no full collection until training starts (young
garbage still freed), the start-up's objects frozen then, thawed when the job ends, so that a launcher running
many jobs in one process still frees each finished job; and a real run resumes it when its training starts."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from initstudy.config.compose import compose_config
from initstudy.core import collector
from initstudy.data.synthetic import SyntheticMNIST
from initstudy.runs import rundir


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """Every test leaves the process's collector as it found it (on, nothing frozen), whatever it asserts."""
    thresholds = gc.get_threshold()
    assert gc.isenabled() and gc.get_freeze_count() == 0 and not collector.paused()
    try:
        yield
    finally:
        collector.thaw()
        gc.unfreeze()
        gc.enable()
        gc.set_threshold(*thresholds)


def full_collections_off() -> bool:
    return gc.get_threshold()[2] == collector.FULL_COLLECTIONS_PUT_OFF


class Node:
    """An object that can be in a reference cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def garbage_cycle() -> weakref.ref:
    """A two-object cycle that nothing else references: only the cycle collector frees it."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_paused_until_training_then_frozen_then_thawed() -> None:
    thresholds = gc.get_threshold()
    with collector.start_up():
        assert gc.isenabled() and full_collections_off()
        young = garbage_cycle()
        # Enough allocations for automatic young collections: start-up's young garbage is freed without gc.collect().
        kept = [[] for _ in range(10 * gc.get_threshold()[0])]
        assert young() is None
        del kept
        first = Node()
        first.other = Node()
        first.other.other = first
        made_at_start_up = weakref.ref(first)
        collector.training_started()
        assert gc.get_threshold() == thresholds and gc.get_freeze_count() > 0
        del first  # garbage now, but frozen: no collection looks at it during training
        gc.collect()
        assert made_at_start_up() is not None
        made_in_training = garbage_cycle()
        gc.collect()
        assert made_in_training() is None  # what training allocates is collected as usual
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    gc.collect()
    assert made_at_start_up() is None  # thawed when the job ended: the next job's collection frees it


def test_an_inner_job_thaws_its_objects_inside_an_outer_start_up() -> None:
    """The basic launcher: the process's start-up (train.main) around each job's (train.hydra_job)."""
    thresholds = gc.get_threshold()
    with collector.start_up():
        with collector.start_up():
            job = Node()
            job.other = job
            watched = weakref.ref(job)
            collector.training_started()
            del job
        assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
        gc.collect()
        assert watched() is None
        with collector.start_up():  # the next job pauses again
            assert full_collections_off()
    assert gc.get_threshold() == thresholds and not collector.paused()


def test_an_error_before_training_leaves_the_collector_on() -> None:
    thresholds = gc.get_threshold()
    with pytest.raises(RuntimeError), collector.start_up():
        assert full_collections_off()
        raise RuntimeError("the job failed before its first step")
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    with collector.start_up():
        collector.training_started()
        assert not gc.isenabled() and gc.get_freeze_count() == 0 and not full_collections_off()
    assert not gc.isenabled()


def test_a_run_resumes_the_collector_when_its_training_starts(
    tmp_path: Path, synthetic_mnist: SyntheticMNIST, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train_run's Trainer carries the callback: inside a job's start-up full collections are off until
    the run's first step, back afterwards (and the start-up's objects frozen until the job ends)."""
    from initstudy.train.fit import train_run

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("INITSTUDY_ROOT", raising=False)
    states = []
    monkeypatch.setattr(collector, "training_started", lambda real=collector.training_started: (
        states.append(full_collections_off()), real(), states.append(full_collections_off())))  # fmt: skip
    synthetic_mnist.write(tmp_path / "data" / "MNIST" / "raw")
    cfg = compose_config(["logger=offline", f"data.root={tmp_path / 'data'}", "data.batch_size=32",
                          "data.val_size=100", "trainer.max_epochs=1"])  # fmt: skip
    out = tmp_path / "run"
    with collector.start_up():
        train_run(cfg, out, rundir.staging_dir(out), "test")
        assert not full_collections_off() and gc.get_freeze_count() > 0
    assert states == [True, False]
    assert not full_collections_off() and gc.get_freeze_count() == 0
