"""The paired permutation test of time to a threshold, against scipy's and a hand enumeration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initstudy.report.speed_test import paired_permutation, speed_comparisons


def test_three_seeds_by_hand():
    # differences 100, 200, 300: of the 8 sign patterns only (+,+,+) and (-,-,-) reach |mean| = 200
    difference, p = paired_permutation([300, 500, 700], [200, 300, 400])
    assert difference == 200
    assert p == 2 / 8


def test_a_tie_in_the_null_distribution_counts_as_extreme():
    # differences 100, 100, -100: mean 100/3; every pattern has |mean| = 100/3 or 100
    _, p = paired_permutation([100, 100, 0], [0, 0, 100])
    assert p == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy_permutation_test_exactly(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(500, 3000, 6).astype(float), rng.integers(500, 3000, 6).astype(float)
    difference, p = paired_permutation(a, b)
    reference = stats.permutation_test(
        (a, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf,
        alternative="two-sided",
    )  # fmt: skip
    assert difference == pytest.approx(np.mean(a - b))
    assert p == pytest.approx(reference.pvalue)


def test_speed_comparisons_pair_by_seed_and_use_the_first_pass_for_early_crossings():
    runs = pd.DataFrame({
        "run_dir": [f"{init}/seed_{s}" for init in ("fast", "slow") for s in range(3)],
        "init": ["fast"] * 3 + ["slow"] * 3, "seed": [0, 1, 2] * 2, "status": "complete", "diverged": False,
        "steps_completed": 5000, "steps_to_97": [0.5, 400.0, 600.0, 900.0, 1000.0, float("nan")],
    })  # fmt: skip
    history = pd.DataFrame({"run_dir": runs.run_dir, "metric": "val/acc_step", "step": 1, "value": 0.5})
    row = speed_comparisons(runs, history, 0.97).iloc[0]
    # fast/seed_0 crosses inside the first interval (by step 1); slow/seed_2 is censored at 5000
    assert (row.init_a, row.init_b, row.n_seeds) == ("fast", "slow", 3)
    assert row.difference == pytest.approx(((1 - 900) + (400 - 1000) + (600 - 5000)) / 3)
    assert (row.not_reached, row.in_first_interval) == (1, 1)
    assert row.p == 2 / 8


def test_the_stratified_logrank_is_statsmodels_survdiff_with_seeds_as_strata():
    """All 5 seeds with the same initializer first: p = 0.025 by hand (each stratum O - E = 1/2, variance
    1/4: z = 2.5 / sqrt(1.25)), where the exact permutation test cannot go below 2/32."""
    import math

    import pandas as pd
    from scipy.stats import norm

    from initstudy.report.speed_test import stratified_logrank

    fast = pd.DataFrame({"steps": [100.0, 110, 120, 90, 130], "reached": True}, index=range(5))
    slow = pd.DataFrame({"steps": [200.0, 250, 230, 260, 240], "reached": True}, index=range(5))
    assert math.isclose(stratified_logrank(fast, slow), 2 * norm.sf(2.5 / math.sqrt(1.25)))
    never = slow.assign(reached=False)  # censored at their last step: still later than every crossing
    assert math.isclose(stratified_logrank(fast, never), 2 * norm.sf(2.5 / math.sqrt(1.25)))
    assert math.isnan(stratified_logrank(fast.assign(reached=False), never))


def test_pairs_tied_in_every_seed_have_no_logrank_test():
    import math

    import pandas as pd

    from initstudy.report.speed_test import stratified_logrank

    same = pd.DataFrame({"steps": [100.0, 110, 120], "reached": True}, index=range(3))
    assert math.isnan(stratified_logrank(same, same.copy()))
