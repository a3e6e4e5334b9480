"""CI's change report (.ci/change-report, called by .ci/run): ``dvc metrics diff`` and ``dvc params diff`` of
HEAD against HEAD~1 from the committed files, and a note instead of a failure where there is no HEAD~1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, dvc, run

SCRIPT = REPO / ".ci" / "change-report"


def test_ci_prints_the_change_report_before_the_tests() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in ci]
    assert commands.index(".ci/change-report") < commands.index("make test")
    script = SCRIPT.read_text()
    assert '"$DVC" "$what" diff HEAD~1 HEAD' in script and "for what in metrics params" in script
    assert os.access(SCRIPT, os.X_OK)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def report(repo: Path) -> str:
    result = run(["bash", str(SCRIPT)], repo, env={"DVC": dvc()[0]})
    return result.stdout


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    """A git + DVC repo whose one stage (never run) declares a git-tracked metrics file and a param."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(dvc("init", "-q"), repo)
    (repo / "dvc.yaml").write_text(
        "stages:\n  report:\n    cmd: 'true'\n    params: [optimizer.lr]\n"
        "    metrics: [reports/metrics.json: {cache: false}]\n"
    )
    (repo / "reports").mkdir()
    return repo


def write_study(repo: Path, lr: float, acc: float) -> None:
    (repo / "params.yaml").write_text(f"optimizer:\n  lr: {lr}\n")
    (repo / "reports/metrics.json").write_text(json.dumps({"he_uniform": {"test_acc_mean": acc}}))


@pytest.mark.slow  # DVC itself, in a temporary repo
def test_the_report_diffs_the_committed_metrics_and_params_of_two_commits(dvc_repo: Path) -> None:
    write_study(dvc_repo, 0.001, 0.9761)
    commit(dvc_repo, "first")
    assert "no previous commit" in report(dvc_repo)  # one commit: a shallow clone looks the same
    write_study(dvc_repo, 0.002, 0.9783)
    commit(dvc_repo, "second")
    out = report(dvc_repo)
    metrics, params = out.split("== dvc params diff")
    assert "reports/metrics.json" in metrics and "he_uniform.test_acc_mean" in metrics
    assert "0.9761" in metrics and "0.9783" in metrics
    assert "optimizer.lr" in params and "0.001" in params and "0.002" in params
    assert "note:" not in out
