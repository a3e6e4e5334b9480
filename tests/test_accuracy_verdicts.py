"""The report's accuracy verdicts in words: each pair with both sources of noise at every margin, and how
uncertain a minimum detectable difference computed from a few seeds' sd is."""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import chi2

from initstudy.report.markdown import bootstrap_statements, sd_interval_factors
from initstudy.report.study_rules import equivalence_rules, judge_accuracy


def test_the_sd_of_five_seeds_is_known_only_within_x0_6_to_x2_9():
    low, high = sd_interval_factors(5)
    assert math.isclose(low, math.sqrt(4 / chi2.ppf(0.975, 4))) and math.isclose(
        high, math.sqrt(4 / chi2.ppf(0.025, 4))
    )
    assert round(low, 2) == 0.60 and round(high, 2) == 2.87
    assert sd_interval_factors(50)[1] < 1.25  # more seeds, a tighter sd


def bootstrap_row(n_seeds: int = 5) -> dict:
    return {"init_a": "glorot", "init_b": "he", "design": "paired", "n_seeds": n_seeds, "difference": 0.0017,
            "ci95_low": -0.0012, "ci95_high": 0.0046, "ci90_low": -0.0007, "ci90_high": 0.0041, "p": 0.2,
            "disagreeing_images": 180.0}  # fmt: skip


def test_each_pair_reads_equivalent_only_at_the_margins_its_90_percent_interval_fits():
    accuracy = judge_accuracy(pd.DataFrame([bootstrap_row()]), equivalence_rules())
    assert accuracy.verdict_2.tolist() == ["not shown equivalent"] and accuracy.verdict_5.tolist() == [
        "equivalent"
    ]
    (statement,) = bootstrap_statements(accuracy)
    assert "+0.17 pp" in statement and "[-0.12, +0.46]" in statement and "5 seeds" in statement
    assert "not shown equivalent within ±0.2 pp" in statement and "; equivalent within ±0.5 pp" in statement
    assert bootstrap_statements(None) == [] and bootstrap_statements(accuracy.iloc[:0]) == []


def test_fewer_seeds_than_the_claims_file_asks_are_not_testable_whatever_the_interval():
    rules = equivalence_rules()
    assert [rule.value for rule in rules] == [0.002, 0.005] and {rule.min_seeds for rule in rules} == {5}
    accuracy = judge_accuracy(pd.DataFrame([bootstrap_row(n_seeds=4)]), rules)
    assert accuracy.verdict_5.tolist() == ["not testable at this budget"]
    assert "not testable at this budget within ±0.5 pp" in bootstrap_statements(accuracy)[0]
