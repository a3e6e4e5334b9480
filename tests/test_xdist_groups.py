"""`make test` relies on `--dist loadgroup`: the tests of one ``xdist_group`` run on one worker, so that a
module-scoped study is trained once and the tests that start SLURM and PostgreSQL never run side by side.
pytest 9.2 with pytest-xdist 3.8 ignores the groups without a word (pytest-dev/pytest-xdist#1386), which
trains every shared study once per worker; this runs a tiny suite the way `make test` does and fails if the
grouping is lost again (the reason pyproject.toml keeps pytest below 9.2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("{group}")


@pytest.fixture(scope="module")
def built():
    with open("builds.log", "a") as log:
        log.write("{name}\\n")


@pytest.mark.parametrize("case", range(4))
def test_case(built, case):
    with open("workers.log", "a") as log:
        log.write(f"{name} {{os.environ['PYTEST_XDIST_WORKER']}}\\n")
"""


def test_a_group_runs_on_one_worker_and_builds_its_module_fixture_once(tmp_path: Path):
    for name, group in (("a", "shared"), ("b", "shared"), ("c", "other")):
        (tmp_path / f"test_{name}.py").write_text(GROUPED.format(group=group, name=name))
    # This folder is the rootdir: none of the study's pytest options apply.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted((tmp_path / "builds.log").read_text().split()) == ["a", "b", "c"]  # once per module
    workers: dict[str, set[str]] = {}
    for line in (tmp_path / "workers.log").read_text().splitlines():
        name, worker = line.split()
        workers.setdefault(name, set()).add(worker)
    assert len(workers["a"] | workers["b"]) == 1, workers  # one group, one worker
    assert len(workers["c"]) == 1, workers
