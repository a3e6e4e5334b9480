"""The paper reports' verdicts come from rules fixed before the data (conf/experiment/claims/<paper>.yaml,
initstudy.report.papers.rules): a verdict with fewer seeds than its rule needs never reads "agrees", an
identity is never counted, every claim file loads with every field a verdict prints, and the trivial
baselines and the tests behind the rules are computed as a hand or scipy computation says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from initstudy.report.papers import saxe2014, schoenholz2017
from initstudy.report.papers.claims import (
    AGREES,
    INCONCLUSIVE,
    NOT_COUNTED,
    NOT_TESTABLE,
    PAPERS,
    PARTS,
    UNTESTED,
    VERDICTS,
)
from initstudy.report.papers.registry import modules
from initstudy.report.papers.rules import (
    ClaimsFileError,
    Rule,
    against_margin,
    decide,
    judged,
    load,
    mcnemar_p,
    sign_test_p,
    t_interval,
    welch_interval,
)

REPO = Path(__file__).resolve().parents[1]
MODULES = modules()


def _rule(min_seeds: int = 5, counts: bool = True) -> Rule:
    return Rule(id="x", claim="a claim", where="Figure 1", paper="p", statistic="s", rule="agrees if ...",
                min_seeds=min_seeds, baseline="trivial", counts=counts,
                not_counted="" if counts else "an identity")  # fmt: skip


@pytest.mark.parametrize("outcome", [AGREES, PARTS, INCONCLUSIVE])
@pytest.mark.parametrize("seeds", [1, 2, 4])
def test_too_few_seeds_is_not_testable_whatever_the_outcome(seeds, outcome):
    assert decide(_rule(min_seeds=5), seeds, outcome) == NOT_TESTABLE
    row = judged(_rule(min_seeds=5), ours="o", seeds=seeds, outcome=outcome, baseline="b")
    assert row.verdict == NOT_TESTABLE != AGREES
    assert row.seeds == f"{seeds} (rule needs 5)" and f"the rule alone would say '{outcome}'" in row.why


def test_enough_seeds_give_the_rules_outcome_and_identities_never_count():
    assert decide(_rule(min_seeds=5), 5, AGREES) == AGREES
    assert decide(_rule(min_seeds=5), 7, PARTS) == PARTS
    assert decide(_rule(counts=False), 100, AGREES) == NOT_COUNTED
    assert decide(_rule(), 5, None) == UNTESTED
    assert decide(_rule(), 0, None) == UNTESTED
    assert decide(_rule(min_seeds=5), 1, None) == NOT_TESTABLE  # one seed: no interval, and too few anyway
    with pytest.raises(ValueError, match="outcome"):
        decide(_rule(), 5, "roughly agrees")


def test_every_row_carries_its_rule_seeds_and_baseline():
    row = judged(_rule(), ours="o", seeds=5, outcome=AGREES, baseline="3/8 cells")
    assert (row.verdict, row.rule, row.where) == (AGREES, "agrees if ...", "Figure 1")
    assert row.baseline == "trivial: 3/8 cells" and row.seeds == "5 (rule needs 5)"


@pytest.mark.parametrize("paper", PAPERS)
def test_each_papers_claims_file_loads_and_the_report_uses_every_claim(paper):
    rules = load(paper, REPO)
    source = Path(MODULES[paper].__file__).read_text()
    for rule in rules.values():
        assert rule.counts or rule.not_counted, rule.id
        # Per-cell ids: Glorot's table1_<activation>_<init> and gap_<activation>, the notebook's notebook_<init>.
        family = rule.id.split("_")[0]
        patterns = {"table1": 'f"table1_{activation}_{init}"', "gap": 'f"gap_{activation}"',
                    "notebook": 'f"{NAME}_{init}"'}  # fmt: skip
        assert f'"{rule.id}"' in source or patterns.get(family, "\0") in source, rule.id
        if "sign test" in rule.rule:  # an exact one-sided sign test can reach p <= 0.05 with this many seeds
            assert (
                sign_test_p(rule.min_seeds, rule.min_seeds)
                <= 0.05
                < sign_test_p(rule.min_seeds - 1, rule.min_seeds - 1)
            )


def test_a_claims_file_without_a_rule_or_reason_is_refused(tmp_path):
    folder = tmp_path / "conf" / "experiment" / "claims"
    folder.mkdir(parents=True)
    entry = {"id": "a", "claim": "c", "where": "w", "paper": "p", "statistic": "s", "rule": "r",
             "min_seeds": 5, "baseline": "b"}  # fmt: skip
    (folder / "he2015.yaml").write_text(json.dumps({"claims": [{**entry, "rule": ""}]}))
    with pytest.raises(ClaimsFileError, match="every claim needs"):
        load("he2015", tmp_path)
    (folder / "he2015.yaml").write_text(json.dumps({"claims": [{**entry, "counts": False}]}))
    with pytest.raises(ClaimsFileError, match="says not why"):
        load("he2015", tmp_path)
    (folder / "he2015.yaml").write_text(json.dumps({"claims": [{**entry, "min_seeds": 0}]}))
    with pytest.raises(ClaimsFileError, match="min_seeds"):
        load("he2015", tmp_path)


def test_the_tests_behind_the_rules_match_scipy_and_hand_computation():
    assert sign_test_p(5, 5) == pytest.approx(1 / 32)
    assert sign_test_p(4, 5) == pytest.approx(6 / 32)  # (5 + 1) / 32
    assert sign_test_p(3, 4) == pytest.approx(stats.binomtest(3, 4, 0.5, alternative="greater").pvalue)
    assert mcnemar_p(5, 0) == pytest.approx(0.03125)
    a, b = [3.1, 2.7, 3.5, 2.9], [1.0, 1.6, 1.2]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch_interval(a, b) == pytest.approx((expected.low, expected.high))
    expected = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
    assert t_interval(a) == pytest.approx((expected.low, expected.high))
    assert math.isnan(t_interval([1.0])[0]) and math.isnan(welch_interval([1.0], [1.0, 2.0])[0])
    assert against_margin((1.6, 1.9), 1.76, 0.5) == AGREES
    assert against_margin((5.0, 6.0), 1.76, 0.5) == PARTS
    assert against_margin((1.0, 6.0), 1.76, 0.5) == INCONCLUSIVE


def _schoenholz_metrics() -> dict:
    return json.loads((REPO / "reports/schoenholz2017/metrics.json").read_text())


def _schoenholz_passed() -> dict[tuple[float, int], tuple[int, int]]:
    """(sigma_w^2, depth) -> (seeds that reached 0.5, seeds) in the committed report's metrics.json: its
    ``seeds_passed`` and ``seeds`` where it has them, else one run per cell (the report before seeds)."""
    metrics = _schoenholz_metrics()
    cells = {}
    for key, acc in metrics["accuracy"].items():
        scale, depth = key.removeprefix("sigma_w2_").split(".depth_")
        if "seeds" in metrics:
            cells[float(scale), int(depth)] = (metrics["seeds_passed"][key], metrics["seeds"][key])
        else:
            cells[float(scale), int(depth)] = (int(acc >= 0.5), 1)
    return cells


def _schoenholz_committed() -> pd.DataFrame:
    """The committed Schoenholz report's cells as runs: per cell, its passing seeds at accuracy 1 and the rest
    at 0 (reports/.../metrics.json)."""
    rows = [{"init.scale": scale, "depth": depth, "seed": seed, "test/acc": float(seed < passed),
             "status": "complete"}
            for (scale, depth), (passed, seeds) in _schoenholz_passed().items() for seed in range(seeds)]  # fmt: skip
    return schoenholz2017.cells(pd.DataFrame(rows), "tanh", 0.05)


def test_schoenholz_trivial_baseline_is_scored_on_the_committed_cells():
    """Read for the committed grid whatever it is: the counts below are computed from metrics.json here."""
    cells = _schoenholz_passed()
    trains = {cell: passed > seeds / 2 for cell, (passed, seeds) in cells.items()}
    fewest = min(seeds for _, seeds in cells.values())
    claims = {c.claim: c for c in schoenholz2017.claims_of(_schoenholz_committed(), 1.761)}
    bound = claims["Trainable iff depth <= 6 xi_c"]
    assert f"every cell trains: {sum(trains.values())}/{len(cells)} cells" in bound.baseline
    assert bound.seeds == f"{fewest} (rule needs 3); per cell"
    assert claims["Order/chaos boundary chi_1 = 1, tanh, sigma_b^2 = 0.05"].verdict == NOT_COUNTED
    scales = sorted({s for s, _ in cells})
    at_top = sum(trains[s, max(d for t, d in cells if t == s)] for s in scales)
    for claim in (
        "The deepest trainable network sits at the boundary",
        "The maximum trainable depth is about 6 xi_c",
    ):
        assert (claims[claim].verdict == NOT_TESTABLE) == (fewest < 3), claims[claim]
    deepest = claims["The deepest trainable network sits at the boundary"]
    assert f"{at_top} of {len(scales)} sigma_w^2 train at their deepest depth" in deepest.baseline


def test_every_verdict_from_committed_diagnostics_has_a_rule_and_seeds():
    rows = [
        *schoenholz2017.claims_of(_schoenholz_committed(), 1.761),
        *schoenholz2017.correlation_claim(REPO / "reports/schoenholz2017/diagnostics", "tanh", 0.05),
        *saxe2014.jacobian_claim(REPO / "reports/saxe2014/diagnostics")[0],
    ]
    for row in rows:
        assert row.verdict in VERDICTS and row.rule and row.seeds and row.baseline and row.where, row
    correlation = next(r for r in rows if r.claim.startswith("Correlation map"))
    frame = pd.read_csv(REPO / "reports/schoenholz2017/diagnostics/diagnostics.csv")
    corr = frame[
        (frame.statistic == "correlation")
        & (frame.depth == frame[frame.statistic == "correlation"].depth.max())
    ]
    scales = {float(s) for s in corr["init"].str.extract(r"scale=([0-9.eE+-]+)")[0].dropna()}
    assert scales and all(f"σw²={s:g}: " in correlation.ours for s in scales)  # every swept sigma_w^2 is read
    _, _, rises = correlation.ours.partition("measured not monotone where the recursion falls: ")
    for pair in filter(None, rises.split(", ")):  # any break it names is between two swept sigma_w^2
        assert {float(v) for v in pair.removeprefix("σw²=").split(" -> ")} <= scales, pair
    orthogonal = next(r for r in rows if r.claim.startswith("Input-output Jacobian at init, orthogonal"))
    assert orthogonal.verdict == NOT_COUNTED  # true by construction
