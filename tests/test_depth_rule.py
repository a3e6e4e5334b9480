"""The depth report's rule for "fails from depth d", stated before the data: failures beyond the shallowest
depth's by a one-sided Fisher exact test at p <= 0.05. 1/5 to 3/5 against 0/5 do not qualify; no failure in
5 runs is reported with the failure rate it still allows."""

from __future__ import annotations

import pandas as pd
from scipy import stats

from initstudy.report.depth import failure_interval, failure_p, statements


def cells(failures: dict[int, int], runs: int = 5) -> pd.DataFrame:
    rows = []
    for depth, failed in failures.items():
        low, high = failure_interval(failed, runs)
        rows.append({"activation": "relu", "init": "a", "depth": depth, "n_runs": runs, "n_failed_to_train": failed,
                     "acc_mean": 0.9 - 0.1 * failed, "acc_std": 0.01, "acc_min": 0.5, "fail_rate_ci_low": low,
                     "fail_rate_ci_high": high})  # fmt: skip
    return pd.DataFrame(rows)


def test_fisher_p_is_scipys_one_sided_test():
    assert failure_p(4, 5, 0, 5) == stats.fisher_exact([[4, 1], [0, 5]], alternative="greater").pvalue
    assert round(failure_p(3, 5, 0, 5), 3) == 0.083 and round(failure_p(4, 5, 0, 5), 3) == 0.024


def test_three_of_five_failures_are_not_a_depth_where_it_fails():
    (statement,) = statements(cells({2: 0, 10: 2, 20: 3}))
    assert "fails from" not in statement and "fails in some seeds but at no depth by the rule" in statement
    assert "first at 10 layers: 2/5" in statement


def test_four_of_five_failures_against_none_are():
    (statement,) = statements(cells({2: 0, 10: 1, 20: 4}))
    assert "`a` fails from 20 layers (4/5 runs" in statement and "Fisher p = 0.024" in statement


def test_no_failure_is_reported_with_the_rate_it_still_allows():
    (statement,) = statements(cells({2: 0, 30: 0}))
    assert "failed in no seed at any depth" in statement and "still allows up to 52%" in statement


def test_the_rule_is_the_claims_files_and_cells_with_too_few_runs_are_not_judged():
    from initstudy.report.study_rules import failure_rule

    rule = failure_rule()
    assert (rule.value, rule.min_seeds) == (0.05, 3)
    (statement,) = statements(
        cells({2: 0, 10: 2}, runs=2)
    )  # 2/2 against 0/2: p = 1/6 anyway, and too few runs
    assert "fails from" not in statement and "at least 3 runs per cell" in statement
