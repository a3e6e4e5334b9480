"""benchmarks/bench_stacked.py's arithmetic: where a stacked sweep's time went, and its bound with the step at the
floor (the numbers the README's Performance section quotes), on hand-made timings; and its argument check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/bench_stacked.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


def group_timing(fit: float, evaluation: float, members: int, shards: int) -> dict:
    return {
        "fit_seconds": fit,
        "eval_seconds": evaluation,
        "stacked_members": members,
        "stacked_shards": shards,
    }


# Two groups, one after another; every member of a group writes the group's timing.json (here 3 and 2 members).
MEASURED = {
    "wall_seconds": 100.0,
    "timings": [group_timing(50.0, 20.0, 3, 2)] * 3 + [group_timing(30.0, 10.0, 2, 1)] * 2,
}


def test_sweep_split_and_bound_at_the_floor(bench) -> None:
    bound = bench.sweep_at_floor(MEASURED, steps=1000, floor=0.001)
    assert bound["groups"] == 2
    assert bound["training_seconds"] == pytest.approx(30.0 + 20.0)
    assert bound["evaluation_seconds"] == pytest.approx(30.0)
    assert bound["other_seconds"] == pytest.approx(100.0 - 50.0 - 30.0)
    # floor x steps x members / shards per group: 0.001 x 1000 x 3 / 2 + 0.001 x 1000 x 2 / 1
    assert bound["training_at_floor_seconds"] == pytest.approx(1.5 + 2.0)
    assert bound["wall_seconds"] == pytest.approx(100.0 - 50.0 + 3.5)


def test_sweep_split_without_a_floor_has_no_bound(bench) -> None:
    split = bench.sweep_at_floor(MEASURED, steps=1000, floor=None)
    with_floor = bench.sweep_at_floor(MEASURED, steps=1000, floor=0.001)
    assert split == {
        k: with_floor[k] for k in ("groups", "training_seconds", "evaluation_seconds", "other_seconds")
    }


def test_train_step_seconds_are_core_seconds_per_model(bench) -> None:
    # 50 s of fit, 20 of them evaluations, 1000 steps, 3 members on 2 threads: 30 / 1000 / 3 x 2
    assert bench.train_step_seconds(group_timing(50.0, 20.0, 3, 2), 1000) == pytest.approx(0.02)
    assert bench.train_step_seconds({"fit_seconds": 5.0, "eval_seconds": 1.0}, 1000) == pytest.approx(0.004)


def test_numerics_without_study_only_is_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--numerics", "fast", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "--numerics fast applies only with --study-only" in done.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_the_record_names_its_data_folder_without_a_host_path(bench, tmp_path):
    assert bench.shown_path(REPO / "data/raw/MNIST/raw") == "data/raw/MNIST/raw"
    assert bench.shown_path(tmp_path / "MNIST" / "raw") == "raw"


def test_the_committed_records_hold_no_host_path():
    for name in ("benchmarks.json", "numerics_matrix.json", "durations.json"):
        text = (REPO / "reports" / name).read_text()
        assert str(REPO) not in text and "/work/" not in text and "/tmp/" not in text, name
