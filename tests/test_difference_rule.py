"""The study's "k of n pairs differ" and its equivalence counts by the rules of conf/experiment/claims/study.yaml:
the level alpha is the file's (no constant in the code decides it), too few seeds read "not testable at this
budget", and each count prints the rule, the seeds and the trivial baseline's score on the same pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from initstudy.report.markdown import (
    accuracy_statements,
    bootstrap_statements,
    comparisons_table,
    convergence_statements,
)
from initstudy.report.papers.rules import ClaimsFileError
from initstudy.report.study_rules import (
    DIFFERS,
    EQUIVALENT,
    NOT_DIFFERENT,
    NOT_TESTABLE,
    difference_rule,
    difference_tally,
    equivalence_rules,
    equivalence_tallies,
    judge_accuracy,
    judge_differences,
    judge_seeds_equivalence,
    seeds_equivalence_rule,
    tally,
)

REPO = Path(__file__).resolve().parents[1]
ACCURACY = "test accuracy (once, after training)"


def claims_root(tmp_path: Path, alpha: float | None = None, text: str | None = None) -> Path:
    """A study root whose claims file is the repository's, with the difference rule's level set to ``alpha``
    (its words moved with it) or its words replaced by ``text``."""
    content = yaml.safe_load((REPO / "conf" / "experiment" / "claims" / "study.yaml").read_text())
    entry = next(e for e in content["claims"] if e["id"] == "pairs_differ")
    if alpha is not None:
        entry["rule"] = entry["rule"].replace(f"{entry['value']:g}", f"{alpha:g}")
        entry["value"] = alpha
    if text is not None:
        entry["rule"] = text
    folder = tmp_path / "conf" / "experiment" / "claims"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return tmp_path


def pair(
    a: str, b: str, p_adjusted: float, n: int = 5, endpoint: str = ACCURACY, degenerate: str = ""
) -> dict:
    """One adjusted seeds-only comparison (the columns the statements read)."""
    return {"endpoint": endpoint, "init_a": a, "init_b": b, "design": "paired", "n_a": n, "n_b": n, "n_pairs": n,
            "diff_mean": 0.001, "diff_ci_low": -0.001, "diff_ci_high": 0.003, "p_value": p_adjusted,
            "p_adjusted": p_adjusted, "degenerate": degenerate, "margin": 0.005, "tost_p": 0.01,
            "verdict": "equivalent within ±0.5 pp", "mde": 0.004, "seeds_for_0_1pp": 40.0, "seeds_for_0_2pp": 12.0,
            "seeds_for_0_5pp": 4.0, "effect_size": 0.5, "effect_size_name": "Cohen's d_z", "effect_ci_low": -0.5,
            "effect_ci_high": 1.5, "family_size": 3}  # fmt: skip


def three_pairs(n: int = 5, endpoint: str = ACCURACY) -> pd.DataFrame:
    return pd.DataFrame([pair("a", "b", 0.03, n, endpoint), pair("a", "c", 0.07, n, endpoint),
                         pair("b", "c", 0.20, n, endpoint)])  # fmt: skip


def test_the_level_is_the_claims_files():
    rule = difference_rule()
    assert (rule.value, rule.min_seeds) == (0.05, 3)
    assert "0.05" in rule.rule


def test_changing_alpha_in_the_claims_file_changes_the_count(tmp_path):
    default = judge_differences(three_pairs(), difference_rule())
    looser = judge_differences(three_pairs(), difference_rule(claims_root(tmp_path, alpha=0.1)))
    assert default.difference_verdict.tolist() == [DIFFERS, NOT_DIFFERENT, NOT_DIFFERENT]
    assert looser.difference_verdict.tolist() == [DIFFERS, DIFFERS, NOT_DIFFERENT]
    (sentence, *_) = accuracy_statements(looser, 0.005, difference_rule(tmp_path))
    assert sentence.startswith(
        "Final test accuracy: 2 of 3 pairs of trained initializers differ significantly"
    )
    assert "differs if the Benjamini-Hochberg-adjusted p is below 0.1" in sentence
    (sentence, *_) = accuracy_statements(default, 0.005, difference_rule())
    assert sentence.startswith(
        "Final test accuracy: 1 of 3 pairs of trained initializers differ significantly"
    )


def test_fewer_seeds_than_the_rule_needs_cannot_print_differ(tmp_path):
    rule = difference_rule()
    # p 0.03 would differ at 0.05; TOST p 0.01 would read equivalent
    judged = judge_seeds_equivalence(judge_differences(three_pairs(n=2), rule), seeds_equivalence_rule())
    assert judged.difference_verdict.tolist() == [NOT_TESTABLE] * 3
    sentence, *pairs = accuracy_statements(judged, 0.005, rule)
    assert "whether the 3 pairs of trained initializers differ is not testable at this budget" in sentence
    assert "2 seeds per pair, the rule needs 3" in sentence and "differ significantly" not in sentence
    for line in pairs:
        assert "(not testable at this budget)" in line and "(differs)" not in line
        assert "equivalence not testable at this budget" in line and "equivalent within" not in line
    table = comparisons_table(judged, rule)
    assert "differs (rule `pairs_differ`: adjusted p < 0.05, seeds >= 3)" in table
    assert table.count("| not testable at this budget | equivalence not testable at this budget |") == 3
    assert "| differs |" not in table and "equivalent within" not in table
    # one pair short of seeds among testable ones: counted apart
    mixed = judge_differences(pd.DataFrame([pair("a", "b", 0.01), pair("a", "c", 0.01, n=2)]), rule)
    (sentence, *_) = accuracy_statements(mixed, 0.005, rule)
    assert (
        "1 of 1 pairs of trained initializers differ significantly (1 more not testable at this budget)"
        in sentence
    )


def test_pairs_reported_apart_get_no_verdict():
    judged = judge_differences(pd.DataFrame([pair("a", "flat", 0.001, degenerate="constant vs sample")]),
                               difference_rule())  # fmt: skip
    assert judged.difference_verdict.tolist() == [""]


def test_the_baseline_scores_against_a_hand_count():
    rule = equivalence_rules()[0]
    verdicts = [EQUIVALENT, "not shown equivalent", NOT_TESTABLE, EQUIVALENT]
    counted = tally(
        verdicts, [5, 5, 2, 6], rule, shown_word=EQUIVALENT, label=EQUIVALENT, baseline_call=EQUIVALENT
    )
    # by hand: 3 pairs judged (the 2-seed one is not), 2 shown equivalent; "every pair equivalent" calls all
    # 3 equivalent and has the rule's verdict on the 2 the rule shows equivalent
    assert (counted.judged, counted.shown, counted.not_testable) == (3, 2, 1)
    assert (counted.baseline_shown, counted.baseline_right) == (3, 2)
    assert (counted.fewest_seeds, counted.most_seeds) == (2, 6)
    assert (
        "calls 3 of 3 pairs equivalent, the rule 2 of 3; the same verdict on 2 of 3"
    ) in counted.baseline_text()
    # "no pair differs" against 1 of 3 differing: it calls none different and is right on the other 2
    differences = difference_tally(judge_differences(three_pairs(), difference_rule()), difference_rule())
    assert (differences.judged, differences.shown, differences.baseline_shown, differences.baseline_right) == (
        3, 1, 0, 2,
    )  # fmt: skip
    assert "'the initializer does not matter (no pair differs)': calls 0 of 3 pairs different, the rule 1 of 3; " \
           "the same verdict on 2 of 3" in differences.rule_text()  # fmt: skip


def bootstrap_row(a: str, b: str, low: float, high: float, n: int = 5) -> dict:
    return {"init_a": a, "init_b": b, "design": "paired", "n_seeds": n, "difference": (low + high) / 2,
            "ci95_low": low - 0.001, "ci95_high": high + 0.001, "ci90_low": low, "ci90_high": high, "p": 0.5,
            "disagreeing_images": 150.0}  # fmt: skip


def test_each_margin_prints_its_count_rule_seeds_and_baseline():
    rules = equivalence_rules()
    accuracy = judge_accuracy(
        pd.DataFrame(
            [
                bootstrap_row("a", "b", -0.001, 0.001),  # inside ±0.2 and ±0.5 pp
                bootstrap_row("a", "c", -0.003, 0.004),  # inside ±0.5 pp only
                bootstrap_row("b", "c", -0.001, 0.001, n=4),
            ]
        ),
        rules,
    )  # too few seeds
    assert accuracy.baseline_2.tolist() == [EQUIVALENT] * 3
    narrow, wide = equivalence_tallies(accuracy, rules)
    assert (narrow.shown, narrow.judged, narrow.baseline_right) == (1, 2, 1)
    assert (wide.shown, wide.judged, wide.baseline_right) == (2, 2, 2)
    statements = bootstrap_statements(accuracy, rules)
    assert statements[0].startswith(
        "Final test accuracy within ±0.2 pp, seeds and test images: 1 of 2 pairs shown "
        "equivalent (1 more not testable at this budget) (rule `accuracy_within_0_2`"
    )
    assert "4-5 seeds per pair, the rule needs 5" in statements[0]
    assert "calls 2 of 2 pairs equivalent, the rule 1 of 2; the same verdict on 1 of 2" in statements[0]
    assert "calls 2 of 2 pairs equivalent, the rule 2 of 2; the same verdict on 2 of 2" in statements[1]
    only_short = judge_accuracy(pd.DataFrame([bootstrap_row("a", "b", -0.001, 0.001, n=2)]), rules)
    assert "seeds and test images: not testable at this budget" in bootstrap_statements(only_short, rules)[0]


def test_the_other_endpoints_are_judged_by_the_same_rule():
    rule = difference_rule()
    loss = judge_differences(three_pairs(endpoint="train loss, mean over all steps"), rule)
    summary = pd.DataFrame(columns=["init", "reached_97", "reached_95", "n_complete", "val_loss_min_step_median",
                                    "horizon_steps", "val_loss_final_mean", "val_loss_min_mean"])  # fmt: skip
    (sentence,) = convergence_statements(summary, loss, "validation", rule)
    assert sentence.startswith("Train loss, mean over all steps: 1 of 3 pairs of trained initializers differ")
    assert (
        "`a` − `b` = " in sentence
        and "rule `pairs_differ`" in sentence
        and "the same verdict on 2 of 3" in sentence
    )


@pytest.mark.parametrize(
    ("alpha", "text", "message"),
    [
        (1.5, None, r"value 1.5 must be a number in \(0, 1\)"),
        (None, "differs if the adjusted p is small", "its rule does not state its value 0.05"),
    ],
)
def test_a_level_outside_0_1_or_unstated_in_the_rule_is_refused(tmp_path, alpha, text, message):
    with pytest.raises(ClaimsFileError, match=message):
        difference_rule(claims_root(tmp_path, alpha=alpha, text=text))
