"""The two numbers that decided verdicts from the code now come from the claims files, like every other rule's:
the level of the Schoenholz report's exact McNemar test (rule trainable_6_xi_c of
conf/experiment/claims/schoenholz2017.yaml) and the default report's seeds-only equivalence margin and seeds
(rule accuracy_equivalent_seeds_only of conf/experiment/claims/study.yaml). Changing the file changes the
verdict; a value out of range or unstated in the rule's words is refused in one line before anything is read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from initstudy.report import inference
from initstudy.report.__main__ import main, write_report
from initstudy.report.markdown import comparisons_table
from initstudy.report.papers import schoenholz2017
from initstudy.report.papers.claims import AGREES, PARTS
from initstudy.report.papers.rules import ClaimsFileError, load
from initstudy.report.study_rules import (
    EQUIVALENCE_NOT_TESTABLE,
    SEEDS_EQUIVALENCE,
    difference_rule,
    judge_differences,
    judge_seeds_equivalence,
    seeds_equivalence_rule,
)
from initstudy.sweep.jobs import MANIFEST_NAME
from test_difference_rule import three_pairs
from test_report import make_run

REPO = Path(__file__).resolve().parents[1]
CLAIMS = Path("conf") / "experiment" / "claims"
ACCURACY = "test accuracy (once, after training)"


def edited_claims(root: Path, paper: str, rule_id: str, value: object = None, text: str | None = None,
                  min_seeds: int | None = None) -> Path:  # fmt: skip
    """``root`` holding a copy of the repository's claims file ``paper`` with rule ``rule_id``'s value set to
    ``value`` (its words moved with it), its words replaced by ``text``, or its seeds set to ``min_seeds``."""
    content = yaml.safe_load((REPO / CLAIMS / f"{paper}.yaml").read_text())
    entry = next(e for e in content["claims"] if e["id"] == rule_id)
    if value is not None:
        entry["rule"] = entry["rule"].replace(f"{entry['value']:g}", f"{value:g}")
        entry["value"] = value
    if text is not None:
        entry["rule"] = text
    if min_seeds is not None:
        entry["min_seeds"] = min_seeds
    (root / CLAIMS).mkdir(parents=True, exist_ok=True)
    (root / CLAIMS / f"{paper}.yaml").write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return root


# --- Schoenholz: the McNemar test's level ---


def _as_predicted() -> pd.DataFrame:
    """12 cells of 3 seeds the 6 xi_c bound gets right, 5 of them wrong for "every cell trains": McNemar
    p = 1/32."""
    depths, seeds = (10, 30, 40, 50, 60, 70), range(3)
    runs = pd.DataFrame(
        [{"init.scale": 1.0, "depth": d, "seed": s, "test/acc": 0.9 if d == 10 else 0.1, "status": "complete"}
         for d in depths for s in seeds]
        + [{"init.scale": 1.75, "depth": d, "seed": s, "test/acc": 0.9, "status": "complete"}
           for d in depths for s in seeds]
    )  # fmt: skip
    return schoenholz2017.cells(runs, "tanh", 0.05)


def _bound(rules: dict) -> object:
    return next(
        c for c in schoenholz2017.claims_of(_as_predicted(), 1.76, rules) if c.claim.startswith("Trainable")
    )


def test_the_mcnemar_level_is_the_claims_files(tmp_path):
    assert not hasattr(schoenholz2017, "ALPHA")
    assert schoenholz2017.mcnemar_level(load("schoenholz2017")) == 0.05
    assert _bound(load("schoenholz2017")).verdict == AGREES  # p = 0.0312 <= 0.05
    stricter = load(
        "schoenholz2017", edited_claims(tmp_path, "schoenholz2017", "trainable_6_xi_c", value=0.01)
    )
    claim = _bound(stricter)
    assert claim.verdict == PARTS and "p = 0.0312" in claim.baseline  # the same p, above the file's 0.01
    assert "(p <= 0.01)" in claim.rule


@pytest.mark.parametrize(
    ("value", "text", "message"),
    [
        (1.5, None, r"schoenholz2017.yaml: claim 'trainable_6_xi_c': value 1.5 must be a number in \(0, 1\)"),
        (None, "agrees if the bound beats the trivial rule", "its rule does not state its value 0.05"),
    ],
)
def test_a_bad_mcnemar_level_is_refused_before_the_report_works(tmp_path, monkeypatch, value, text, message):
    root = edited_claims(tmp_path / "repo", "schoenholz2017", "trainable_6_xi_c", value=value, text=text)
    with pytest.raises(ClaimsFileError, match=message) as refused:
        schoenholz2017.claims_of(_as_predicted(), 1.76, load("schoenholz2017", root))
    assert "\n" not in str(refused.value).strip()
    monkeypatch.setenv("INITSTUDY_ROOT", str(root))
    with pytest.raises(ClaimsFileError, match=message):
        schoenholz2017.report(None, tmp_path / "out")  # refused before the sweep (here none) is touched
    assert not (tmp_path / "out").exists()


# --- the default report: the seeds-only equivalence margin and its seeds ---


def test_the_seeds_only_margin_is_the_claims_files_and_no_constant_is_left():
    rule = seeds_equivalence_rule()
    assert (rule.id, rule.value, rule.min_seeds) == (SEEDS_EQUIVALENCE, 0.005, 3)
    assert "0.005" in rule.rule and not hasattr(inference, "DEFAULT_MARGIN")


def test_fewer_seeds_than_the_equivalence_rule_needs_cannot_print_equivalent(tmp_path):
    default, needy = (
        seeds_equivalence_rule(),
        seeds_equivalence_rule(edited_claims(tmp_path, "study", SEEDS_EQUIVALENCE, min_seeds=6)),
    )
    differences = judge_differences(three_pairs(n=5), difference_rule())  # TOST p 0.01 in each
    assert judge_seeds_equivalence(differences, default).verdict.tolist() == ["equivalent within ±0.5 pp"] * 3
    short = judge_seeds_equivalence(differences, needy)
    assert short.verdict.tolist() == [EQUIVALENCE_NOT_TESTABLE] * 3 and set(short.equivalence_min_seeds) == {
        6
    }
    table = comparisons_table(short, difference_rule(), needy, 0.005)
    assert "equivalence (TOST; rule `accuracy_equivalent_seeds_only`: margin ±0.5 pp, seeds >= 6)" in table
    assert (
        table.count("| equivalence not testable at this budget |") == 3 and "equivalent within" not in table
    )
    overridden = comparisons_table(short, difference_rule(), needy, 0.002)
    assert "margin ±0.2 pp set by --margin, not the rule's ±0.5 pp" in overridden


@pytest.mark.parametrize(
    ("value", "text", "message"),
    [
        (
            2.0,
            None,
            r"study.yaml: claim 'accuracy_equivalent_seeds_only': value 2.0 must be a number in \(0, 1\)",
        ),
        (None, "equivalent if the interval is narrow", "its rule does not state its value 0.005"),
    ],
)
def test_a_bad_margin_is_refused_in_one_line_before_any_run_is_read(tmp_path, monkeypatch, capsys, value, text,
                                                                    message):  # fmt: skip
    root = edited_claims(tmp_path / "repo", "study", SEEDS_EQUIVALENCE, value=value, text=text)
    monkeypatch.setenv("INITSTUDY_ROOT", str(root))
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.md").write_text("the previous report")
    with pytest.raises(ClaimsFileError, match=message):
        write_report(tmp_path / "no runs here", out)  # the rule is read before the (missing) runs
    with pytest.raises(SystemExit) as stopped:
        main(["--runs", str(tmp_path / "no runs here"), "--out", str(out)])
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "accuracy_equivalent_seeds_only" in line
    assert [p.name for p in out.iterdir()] == ["report.md"] and (
        out / "report.md"
    ).read_text() == "the previous report"


def _two_initializers(sweep: Path) -> Path:
    entries = [make_run(sweep, name, s, [v + 0.002 * s * (1 + (name == "b"))])
               for name, v in (("a", 0.97), ("b", 0.975)) for s in range(3)]  # fmt: skip
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    return sweep


@pytest.mark.slow
def test_the_reports_margin_is_the_claims_files_unless_given(tmp_path, monkeypatch):
    root = edited_claims(tmp_path / "repo", "study", SEEDS_EQUIVALENCE, value=0.002)
    monkeypatch.setenv("INITSTUDY_ROOT", str(root))
    sweep = _two_initializers(tmp_path / "runs")
    write_report(sweep, tmp_path / "from_file")
    accuracy = pd.read_csv(tmp_path / "from_file" / "comparisons.csv").query("endpoint == @ACCURACY")
    assert accuracy.margin.tolist() == [0.002]
    report = (tmp_path / "from_file" / "report.md").read_text()
    assert "rule `accuracy_equivalent_seeds_only`: margin ±0.2 pp, seeds >= 3" in report
    write_report(sweep, tmp_path / "given", margin=0.004)
    accuracy = pd.read_csv(tmp_path / "given" / "comparisons.csv").query("endpoint == @ACCURACY")
    assert accuracy.margin.tolist() == [0.004]
    assert (
        "margin ±0.4 pp set by --margin, not the rule's ±0.2 pp"
        in (tmp_path / "given" / "report.md").read_text()
    )
