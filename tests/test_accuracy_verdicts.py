"""The report's accuracy verdicts in words: each pair with both sources of noise at every margin, and how
uncertain a minimum detectable difference computed from a few seeds' sd is."""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import chi2

from initstudy.report.markdown import bootstrap_statements, sd_interval_factors


def test_the_sd_of_five_seeds_is_known_only_within_x0_6_to_x2_9():
    low, high = sd_interval_factors(5)
    assert math.isclose(low, math.sqrt(4 / chi2.ppf(0.975, 4))) and math.isclose(
        high, math.sqrt(4 / chi2.ppf(0.025, 4))
    )
    assert round(low, 2) == 0.60 and round(high, 2) == 2.87
    assert sd_interval_factors(50)[1] < 1.25  # more seeds, a tighter sd


def test_each_pair_reads_equivalent_only_at_the_margins_its_90_percent_interval_fits():
    accuracy = pd.DataFrame(
        [
            {"init_a": "glorot", "init_b": "he", "design": "paired", "n_seeds": 5, "difference": 0.0017,
             "ci95_low": -0.0012, "ci95_high": 0.0046, "ci90_low": -0.0007, "ci90_high": 0.0041, "p": 0.2,
             "disagreeing_images": 180.0, "equivalent_2": False, "equivalent_5": True},
        ]
    )  # fmt: skip
    (statement,) = bootstrap_statements(accuracy)
    assert "+0.17 pp" in statement and "[-0.12, +0.46]" in statement and "5 seeds" in statement
    assert "not shown equivalent within ±0.2 pp" in statement and "; equivalent within ±0.5 pp" in statement
    assert bootstrap_statements(None) == [] and bootstrap_statements(accuracy.iloc[:0]) == []
