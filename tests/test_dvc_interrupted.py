"""An interrupted `dvc repro` loses nothing tracked: a stage killed while it writes leaves the outputs of the
last complete run byte for byte (dvc.yaml's `persist: true` stops DVC deleting them first; the stages write
into a staging folder and move the files in at the end), and the next `dvc repro` runs it again."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import SyntheticMNIST, copy_study, dvc, make_study_repo, run
from initstudy.core import publish

# The module's tests share its killed stage's study, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("dvc_interrupted")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, synthetic_mnist: SyntheticMNIST) -> Path:
    """The tiny default study after a complete `dvc repro report`; each test works on a copy."""
    repo = make_study_repo(tmp_path_factory.mktemp("interrupted"), synthetic_mnist)
    run(dvc("repro", "report"), repo)
    return repo


@pytest.fixture
def repo(reproduced: Path, tmp_path: Path) -> Path:
    return copy_study(reproduced, tmp_path)


def outputs(repo: Path) -> dict[str, str]:
    """sha256 of every file under reports/ but the staging folders (never an output)."""
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((repo / "reports").rglob("*")) if p.is_file()
            and not any(publish.STAGING_MARK in part or part.startswith(".report-staging-") for part in p.parts)}  # fmt: skip


def status(repo: Path) -> str:
    """`dvc status` of the default study's stages (the report and what it depends on)."""
    return run(dvc("status", "--with-deps", "report"), repo).stdout


def kill_stage_when_paused(repro: subprocess.Popen, module: str, point: str, timeout: float = 300) -> None:
    """Wait until the stage says it paused at ``point`` (its stderr goes through DVC's), then SIGKILL the
    stage's own process, not DVC."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = repro.stderr.readline()
        seen.append(line)
        if f"paused at {point}" in line:
            stages = [p for p in psutil.Process(repro.pid).children(recursive=True)
                      if p.cmdline()[1:3] == ["-m", module]]  # fmt: skip
            assert len(stages) == 1, stages
            stages[0].send_signal(signal.SIGKILL)
            return
        if not line and repro.poll() is not None:
            break
    os.killpg(repro.pid, signal.SIGKILL)
    pytest.fail(f"never paused at {point}: {''.join(seen)[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["diagnose", "report"])
def test_a_stage_killed_while_it_writes_leaves_the_committed_outputs(repo: Path, stage: str):
    before = outputs(repo)
    assert f"reports/{'diagnostics/diagnostics.csv' if stage == 'diagnose' else 'report.md'}" in before
    code = repo / "src/initstudy" / stage / "__main__.py"
    code.write_text(code.read_text() + "# edited: the stage is to run again\n")

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(DVC_NO_ANALYTICS="1", INITSTUDY_PAUSE_AT=f"{stage}-publish")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    repro = subprocess.Popen(dvc("repro", "report"), cwd=repo, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    kill_stage_when_paused(repro, f"initstudy.{stage}", f"{stage}-publish")
    rest = repro.communicate(timeout=120)[1]
    assert repro.returncode != 0, rest
    assert f"failed to reproduce '{stage}'" in rest, rest

    assert outputs(repo) == before  # nothing deleted, nothing half-written
    assert stage in status(repo)  # and not recorded as done

    again = run(dvc("repro", "report"), repo)
    assert f"Running stage '{stage}'" in again.stdout
    assert "up to date" in status(repo)
    leftovers = [p for p in (repo / "reports").rglob("*") if publish.STAGING_MARK in p.name or
                 p.name.startswith(".report-staging-")]  # fmt: skip
    assert leftovers == []
    assert set(outputs(repo)) == set(before)
