"""benchmarks/gpu_check.sh, the GPU readiness check, runs on the CPU when told (tiny): the same script a GPU
session runs, so that its first minutes on a device are not spent on a typo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, run


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_the_cpu_and_finds_the_member_is_its_single_run(
    synthetic_data_repo: Path, tmp_path: Path
):
    out = tmp_path / "out"
    env = {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_TINY": "1", "GPU_CHECK_ROOT": str(synthetic_data_repo),
           "PYTHON": sys.executable}  # fmt: skip
    done = run(["bash", str(REPO / "benchmarks/gpu_check.sh"), str(out)], tmp_path, env=env, timeout=900)
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["runs"] == 4 and result["stacked_members"] == 4
    assert result["sweep_wall_seconds"] > 0 and result["single_run_wall_seconds"] > 0
    assert result["member_is_single_run"] == {
        "metrics_json_identical": True,
        "history_csv_identical": True,
        "weights_final_max_abs_difference": 0.0,
    }
    assert {timing["device"] for timing in result["timings"].values()} == {"cpu"}
    assert "4 runs stacked" in done.stdout


def test_gpu_check_refuses_an_unknown_device(tmp_path: Path):
    done = run(["bash", str(REPO / "benchmarks/gpu_check.sh"), str(tmp_path)], tmp_path, check=False,
               env={"GPU_CHECK_DEVICE": "tpu"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: invalid GPU_CHECK_DEVICE=tpu: must be gpu or cpu"
