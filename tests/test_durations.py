"""benchmarks/durations.py: a measurement is merged into the file with its machine and load, only a command that
succeeded is recorded, and a call without ``NAME -- COMMAND`` is refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/durations.py"


@pytest.fixture(scope="module")
def durations():
    return load_script(SCRIPT)


def test_a_measurement_is_merged_beside_the_others(durations, tmp_path: Path):
    path = tmp_path / "durations.json"
    path.write_text(json.dumps({"make test": {"seconds": 1.0}}))
    entry = durations.record("dvc repro", 125.0, ["dvc", "repro"], [0.5, 2.5, 1.5], 4.567, path)
    written = json.loads(path.read_text())
    assert written["make test"] == {"seconds": 1.0} and written["dvc repro"] == entry
    assert entry["minutes"] == 2.1 and entry["command"] == "dvc repro"
    assert entry["load_average_start_mean_end"] == [0.5, 1.5, 1.5] and entry["machine"]["cores"] >= 1
    assert (
        entry["reference"]["cpu_seconds"] == 4.57
        and "import pytorch_lightning" in entry["reference"]["command"]
    )


def test_the_reference_is_the_median_cpu_time_of_fresh_processes(durations, monkeypatch: pytest.MonkeyPatch):
    """CPU time, not wall time: a process that burns 0.3 s of CPU reads about that much, on a busy machine too,
    and one that sleeps 0.5 s reads far less than its wall time."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    monkeypatch.setattr(durations, "REFERENCE", [sys.executable, "-c", burn])
    assert 0.25 <= durations.reference_cpu_seconds(runs=3) < 3.0
    monkeypatch.setattr(durations, "REFERENCE", [sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert durations.reference_cpu_seconds(runs=1) < 0.25


def test_only_a_command_that_succeeded_is_recorded(
    durations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "durations.json"
    monkeypatch.setattr(durations, "DURATIONS", path)
    monkeypatch.setattr(durations, "reference_cpu_seconds", lambda: 1.0)
    assert durations.main(["fails", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert not path.exists()
    assert durations.main(["works", "--", sys.executable, "-c", "pass"]) == 0
    assert list(json.loads(path.read_text())) == ["works"]


def test_a_call_without_name_and_command_is_refused_with_one_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "make", "test"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "usage" in done.stderr
