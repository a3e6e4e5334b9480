"""Inference across seeds, each routine against a hand computation or an independent scipy/statsmodels call."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from initstudy.report.inference import (
    COLUMNS,
    adjust,
    compare,
    km_curve,
    minimum_detectable_difference,
    prediction_interval,
    seeds_needed,
    survival,
)
from initstudy.report.markdown import km_cell
from initstudy.report.median_interval import median_interval

# Final test accuracies shaped like the study's: five seeds, sd ~0.002, the zeros initializer constant.
GLOROT = pd.Series([0.9778, 0.9795, 0.9801, 0.9802, 0.9810])
HE = pd.Series([0.9770, 0.9781, 0.9799, 0.9790, 0.9803])
MARGIN = 0.005  # ±0.5 pp, a test's margin (the report's is its claims file's)
NORMAL = pd.Series([0.9712, 0.9735, 0.9741, 0.9722, 0.9750])
ZEROS = pd.Series([0.1135] * 5)
SPEC_COLUMNS = [
    "endpoint",
    "init_a",
    "init_b",
    "design",
    "n_a",
    "n_b",
    "n_pairs",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "t",
    "df",
    "p_value",
    "effect_size",
    "effect_size_name",
    "effect_ci_low",
    "effect_ci_high",
    "degenerate",
    "margin",
    "tost_p",
    "equivalent",
    "verdict",
    "sd",
    "mde",
    "seeds_for_0.1pp",
    "seeds_for_0.2pp",
    "seeds_for_0.5pp",
]


def one_pair(a: pd.Series, b: pd.Series, **kwargs) -> pd.Series:
    kwargs = {"endpoint": "test/acc", "paired": True, "alpha": 0.05} | kwargs
    return compare({"a": a, "b": b}, **kwargs).iloc[0]


# --- prediction interval ---


def test_prediction_interval_is_mean_plus_minus_t_s_sqrt_1_plus_1_over_n():
    values = np.array([0.9778, 0.9795, 0.9801, 0.9802, 0.9810])
    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) * math.sqrt(1 + 1 / 5)
    low, high = prediction_interval(list(values))
    assert low == pytest.approx(values.mean() - half, rel=1e-12)
    assert high == pytest.approx(values.mean() + half, rel=1e-12)
    # Missing runs are dropped, not counted.
    assert prediction_interval(pd.Series([*values, math.nan])) == pytest.approx((low, high), rel=1e-12)


def test_prediction_interval_without_spread_or_runs():
    assert all(map(math.isnan, prediction_interval([0.98])))
    assert all(map(math.isnan, prediction_interval([])))
    low, high = prediction_interval([0.1135] * 7)  # an sd of 1e-17 in floating point, none in fact
    assert low == high == pytest.approx(0.1135)


# --- Kaplan-Meier ---

# Seven runs, steps to the threshold; False = never reached it, observed until that step.
KM_TIMES = [100, 200, 200, 300, 400, 500, 600]
KM_REACHED = [True, True, False, True, False, True, False]


def hand_kaplan_meier(times, reached) -> list[tuple[float, float]]:
    """S(t) = product over event times u <= t of (1 - d_u / n_u), n_u counting runs still observed at u."""
    times, reached = np.asarray(times, float), np.asarray(reached, bool)
    curve, surv = [], 1.0
    for u in sorted(set(times[reached])):
        at_risk = np.sum(times >= u)
        events = np.sum((times == u) & reached)
        surv *= 1 - events / at_risk
        curve.append((u, surv))
    return curve


def test_kaplan_meier_curve_matches_the_product_formula():
    curve = km_curve(KM_TIMES, KM_REACHED)
    expected = [(0.0, 1.0), *hand_kaplan_meier(KM_TIMES, KM_REACHED), (600.0, 15 / 56)]
    assert list(curve.columns) == ["time", "survival"]
    assert curve.time.tolist() == [time for time, _ in expected]
    assert curve.survival.tolist() == pytest.approx([surv for _, surv in expected], rel=1e-12)
    # The same numbers written out: 6/7, 6/7 * 5/6 (one run censored at 200 is at risk there), * 3/4, * 1/2.
    assert curve.survival.tolist()[1:5] == pytest.approx([6 / 7, 5 / 7, 15 / 28, 15 / 56], rel=1e-12)


@pytest.mark.filterwarnings("error")
def test_survival_median_and_restricted_mean_by_hand():
    result = survival(KM_TIMES, KM_REACHED, horizon=600)
    assert (result.n_total, result.n_reached, result.counts()) == (7, 4, "4/7")
    assert result.median == 500  # the first step below 0.5: 15/28 = 0.54 at 300, 15/56 at 500
    assert result.median_ci_low <= result.median
    area = 1 * 100 + 6 / 7 * 100 + 5 / 7 * 100 + 15 / 28 * 200 + 15 / 56 * 100
    assert result.rmst == pytest.approx(area, rel=1e-12)
    # Up to an earlier horizon only the area before it counts.
    assert survival(KM_TIMES, KM_REACHED, horizon=250).rmst == pytest.approx(100 + 600 / 7 + 5 / 7 * 50)


@pytest.mark.filterwarnings("error")
def test_survival_when_every_run_reaches_it():
    """Without censoring the restricted mean is the plain mean, and the curve's fall to 0 warns nothing."""
    times = [120, 250, 300, 410, 500]
    result = survival(times, [True] * 5, horizon=1000)
    assert result.median == 300
    assert result.rmst == pytest.approx(np.mean(times), rel=1e-12)
    assert result.median_ci_low <= 300 <= result.median_ci_high


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("times", [[], [1000.0] * 5], ids=["no runs", "none reached"])
def test_survival_without_events(times):
    result = survival(times, [False] * len(times), horizon=1000)
    assert result.counts() == f"0/{len(times)}"
    assert (
        math.isnan(result.median) and math.isnan(result.median_ci_low) and math.isnan(result.median_ci_high)
    )
    assert result.rmst == 1000
    assert km_curve(times, [False] * len(times)).survival.eq(1.0).all()


@pytest.mark.filterwarnings("error")
def test_survival_median_undefined_when_most_runs_never_reach_it():
    result = survival([300, 1000, 1000, 1000, 1000], [True, False, False, False, False], horizon=1000)
    assert math.isnan(result.median) and math.isnan(result.median_ci_high)
    assert result.rmst == pytest.approx(300 + 0.8 * 700)


def test_survival_rejects_a_missing_time():
    with pytest.raises(ValueError, match="censored"):
        survival([100, math.nan], [True, False], horizon=1000)


# --- the difference: paired and Welch t ---


def test_columns_and_pairs_in_the_mappings_order():
    frame = compare(
        {"glorot": GLOROT, "he": HE, "normal": NORMAL}, endpoint="test/acc", paired=True, alpha=0.05
    )
    assert list(frame.columns) == SPEC_COLUMNS == list(COLUMNS)
    assert list(zip(frame.init_a, frame.init_b, strict=True)) == list(
        itertools.combinations(["glorot", "he", "normal"], 2)
    )
    assert (frame.endpoint == "test/acc").all()


def test_paired_t_is_ttest_rel_and_a_one_sample_t_on_differences():
    row = one_pair(GLOROT, NORMAL)
    rel, one = stats.ttest_rel(GLOROT, NORMAL), stats.ttest_1samp(GLOROT - NORMAL, 0.0)
    interval = one.confidence_interval(0.95)
    assert (row.design, row.n_pairs, row.degenerate) == ("paired", 5, "")
    assert row.diff_mean == pytest.approx((GLOROT - NORMAL).mean(), rel=1e-12)
    assert row.t == pytest.approx(rel.statistic, rel=1e-12) == pytest.approx(one.statistic, rel=1e-12)
    assert row.p_value == pytest.approx(rel.pvalue, rel=1e-9) == pytest.approx(one.pvalue, rel=1e-9)
    assert row.df == 4
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)


def test_paired_on_the_common_seeds_only():
    a = pd.Series([0.9778, 0.9795, math.nan, 0.9802, 0.9810], index=[0, 1, 2, 3, 4])
    b = pd.Series([0.9712, 0.9735, 0.9741, 0.9750, 0.9760], index=[1, 2, 3, 4, 5])
    row = one_pair(a, b)
    common = [1, 3, 4]
    assert (row.design, row.n_a, row.n_b, row.n_pairs) == ("paired", 4, 5, 3)
    assert row.t == pytest.approx(stats.ttest_rel(a[common], b[common]).statistic, rel=1e-12)


def test_welch_is_scipys_unequal_variance_t():
    row = one_pair(GLOROT, NORMAL, paired=False)
    welch = stats.ttest_ind(GLOROT, NORMAL, equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert (row.design, row.n_pairs) == ("welch", 0)
    assert (row.t, row.df, row.p_value) == pytest.approx((welch.statistic, welch.df, welch.pvalue), rel=1e-9)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)


def test_paired_falls_back_to_welch_without_two_common_seeds():
    row = one_pair(GLOROT, pd.Series(NORMAL.to_numpy(), index=range(4, 9)))  # one seed in common
    assert row.design == "welch"
    assert row.t == pytest.approx(stats.ttest_ind(GLOROT, NORMAL, equal_var=False).statistic, rel=1e-12)


# --- effect sizes ---


def test_cohens_dz_by_hand_and_its_noncentral_t_interval():
    row = one_pair(GLOROT, HE)
    d = (GLOROT - HE).to_numpy()
    dz, n = d.mean() / d.std(ddof=1), len(d)
    assert row.effect_size_name == "Cohen's d_z"
    assert row.effect_size == pytest.approx(dz, rel=1e-12)
    assert row.effect_ci_low < dz < row.effect_ci_high
    # The interval's ends are the δ under which the observed t is the 97.5th and 2.5th percentile.
    t_obs = dz * math.sqrt(n)
    assert stats.nct.cdf(t_obs, n - 1, row.effect_ci_low * math.sqrt(n)) == pytest.approx(0.975, abs=1e-9)
    assert stats.nct.cdf(t_obs, n - 1, row.effect_ci_high * math.sqrt(n)) == pytest.approx(0.025, abs=1e-9)
    # Swapping the initializers mirrors the interval.
    swapped = one_pair(HE, GLOROT)
    assert (swapped.effect_ci_low, swapped.effect_ci_high) == pytest.approx(
        (-row.effect_ci_high, -row.effect_ci_low), rel=1e-9
    )


def test_dz_interval_reaches_zero_for_a_null_difference():
    """At t = 0, P(T <= 0) = P(Z + δ·sqrt(n) <= 0) = Φ(-δ·sqrt(n)) whatever the df: bounds ±z_0.975 / sqrt(n)."""
    a = pd.Series([0.970, 0.972, 0.974, 0.971, 0.973])
    b = a + pd.Series([0.001, -0.001, 0.002, -0.002, 0.0])
    row = one_pair(a, b)
    bound = stats.norm.ppf(0.975) / math.sqrt(5)
    assert row.t == pytest.approx(0.0, abs=1e-9)
    assert (row.effect_ci_low, row.effect_ci_high) == pytest.approx((-bound, bound), abs=1e-6)


def test_hedges_g_by_hand_and_its_interval():
    row = one_pair(GLOROT, NORMAL, paired=False)
    x, y = GLOROT.to_numpy(), NORMAL.to_numpy()
    df = len(x) + len(y) - 2
    pooled = math.sqrt((4 * x.var(ddof=1) + 4 * y.var(ddof=1)) / df)
    correction = special.gamma(df / 2) / (math.sqrt(df / 2) * special.gamma((df - 1) / 2))
    assert correction == pytest.approx(1 - 3 / (4 * df - 1), abs=1e-3)  # the usual approximation of J
    d = (x.mean() - y.mean()) / pooled
    assert row.effect_size_name == "Hedges' g"
    assert row.effect_size == pytest.approx(d * correction, rel=1e-12)
    assert row.sd == pytest.approx(pooled, rel=1e-12)
    scale = math.sqrt(1 / 5 + 1 / 5)
    student_t = stats.ttest_ind(x, y).statistic  # pooled-variance t, whose noncentrality is δ / scale
    assert stats.nct.cdf(student_t, df, row.effect_ci_low / scale) == pytest.approx(0.975, abs=1e-9)
    assert stats.nct.cdf(student_t, df, row.effect_ci_high / scale) == pytest.approx(0.025, abs=1e-9)


# --- equivalence (TOST) ---


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "welch"])
def test_tost_equivalent_iff_the_90_percent_interval_lies_inside_the_margin(paired):
    verdicts = set()
    for shift in (0.0, 0.001, 0.002, 0.003, 0.004, 0.0045, 0.005, 0.006, 0.01):
        b = GLOROT - shift + pd.Series([0.0004, -0.0003, 0.0001, -0.0002, 0.0])
        row = one_pair(GLOROT, b, paired=paired, margin=MARGIN)
        if paired:
            inside = stats.ttest_rel(GLOROT, b).confidence_interval(0.90)
            lower = stats.ttest_1samp(GLOROT - b, -MARGIN, alternative="greater").pvalue
            upper = stats.ttest_1samp(GLOROT - b, MARGIN, alternative="less").pvalue
        else:
            inside = stats.ttest_ind(GLOROT, b, equal_var=False).confidence_interval(0.90)
            lower = stats.ttest_ind(GLOROT, b - MARGIN, equal_var=False, alternative="greater").pvalue
            upper = stats.ttest_ind(GLOROT, b + MARGIN, equal_var=False, alternative="less").pvalue
        assert row.tost_p == pytest.approx(max(lower, upper), rel=1e-9)
        assert row.equivalent == (inside.low > -MARGIN and inside.high < MARGIN)
        verdicts.add(row.verdict)
    assert verdicts == {"equivalent within ±0.5 pp", "not shown equivalent (±0.5 pp)"}


def test_clearly_equivalent_and_clearly_not():
    same = one_pair(GLOROT, HE, margin=MARGIN)
    apart = one_pair(GLOROT, NORMAL, margin=MARGIN)
    assert same.equivalent and same.tost_p < 0.01 and same.margin == MARGIN
    assert not apart.equivalent and apart.tost_p > 0.5
    assert apart.verdict == "not shown equivalent (±0.5 pp)"


def test_no_margin_no_equivalence_test_and_margins_in_their_units():
    row = one_pair(GLOROT, HE)
    assert math.isnan(row.tost_p) and math.isnan(row.margin) and not row.equivalent
    assert row.verdict == "no equivalence margin: difference test only"
    assert one_pair(GLOROT, HE, margin=0.0025).verdict == "equivalent within ±0.25 pp"
    assert one_pair(GLOROT, HE, endpoint="test/loss", margin=0.05).verdict == "equivalent within ±0.05"


# --- degenerate pairs ---


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "welch"])
def test_constant_vs_sample_is_a_one_sample_t_against_the_constant(paired):
    row = one_pair(ZEROS, GLOROT, paired=paired, margin=MARGIN)
    reference = stats.ttest_1samp(GLOROT, 0.1135)
    interval = reference.confidence_interval(0.95)
    assert row.degenerate == "constant vs sample"
    assert row.diff_mean == pytest.approx(0.1135 - GLOROT.mean(), rel=1e-12)
    assert row.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert row.t == pytest.approx(-reference.statistic, rel=1e-9)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx(
        (0.1135 - interval.high, 0.1135 - interval.low), rel=1e-12
    )
    assert math.isnan(row.tost_p) and not row.equivalent
    assert row.verdict == "constant vs sample: not tested for equivalence"


def test_both_constant_and_too_few_runs():
    both = one_pair(ZEROS, pd.Series([0.5] * 5), margin=MARGIN)
    assert both.degenerate == "both constant"
    assert math.isnan(both.t) and math.isnan(both.df) and math.isnan(both.p_value)
    assert both.diff_ci_low == both.diff_ci_high == pytest.approx(both.diff_mean) == pytest.approx(-0.3865)
    assert math.isnan(both.effect_size) and math.isnan(both.mde) and math.isnan(both["seeds_for_0.2pp"])
    few = one_pair(GLOROT, pd.Series([0.97, math.nan, math.nan]))
    assert (few.degenerate, few.design, few.n_b) == ("too few runs", "welch", 1)
    assert few.diff_mean == pytest.approx(GLOROT.mean() - 0.97)
    assert few[["diff_ci_low", "t", "p_value", "effect_size", "sd", "mde"]].isna().all()


def test_identical_runs_in_every_seed_are_a_constant_difference():
    row = one_pair(GLOROT, GLOROT.copy(), margin=MARGIN)
    assert row.degenerate == "constant difference"
    assert row.diff_mean == row.diff_ci_low == row.diff_ci_high == 0
    assert math.isnan(row.p_value) and not row.equivalent


# --- multiple comparisons ---


def study_frames() -> pd.DataFrame:
    samples = {"zeros": ZEROS, "glorot": GLOROT, "he": HE, "normal": NORMAL}
    loss = {name: 1 - values + 0.05 for name, values in samples.items()}
    return pd.concat(  # each compare call numbers its rows from 0: the index repeats
        [
            compare(samples, endpoint="test/acc", paired=True, alpha=0.05, margin=MARGIN),
            compare(loss, endpoint="test/loss", paired=True, alpha=0.05),
        ]
    )


def test_benjamini_hochberg_within_each_endpoint_without_degenerate_rows():
    frame = adjust(study_frames(), alpha=0.05)
    assert len(frame) == 12 and not frame.index.is_unique
    degenerate = frame.degenerate != ""
    assert degenerate.sum() == 6  # zeros against the three others, on each endpoint
    assert frame.p_adjusted[degenerate].isna().all()
    assert not frame.significant[degenerate].any() and (frame.family_size[degenerate] == 0).all()
    for endpoint in ("test/acc", "test/loss"):
        family = frame[(frame.endpoint == endpoint) & ~degenerate]
        expected = stats.false_discovery_control(family.p_value.to_numpy(), method="bh")
        assert family.p_adjusted.to_numpy() == pytest.approx(expected, rel=1e-12)
        assert (family.family_size == 3).all()
        assert (family.significant == (family.p_adjusted < 0.05)).all()


def test_one_family_when_by_is_none():
    frame = adjust(study_frames(), alpha=0.05, by=None)
    tested = frame[frame.degenerate == ""]
    expected = stats.false_discovery_control(tested.p_value.to_numpy(), method="bh")
    assert tested.p_adjusted.to_numpy() == pytest.approx(expected, rel=1e-12)
    assert (tested.family_size == 6).all()
    assert adjust(study_frames(), alpha=0.05, by=["endpoint", "design"]).family_size.max() == 3


# --- power ---


def test_minimum_detectable_difference_has_the_power_asked_for():
    mde = minimum_detectable_difference(0.0022, 5, paired=True, alpha=0.05)
    # By hand: the δ at which the two-sided paired t (df 4) rejects with probability 0.8.
    critical = stats.t.ppf(0.975, 4)

    def power(delta: float) -> float:
        noncentrality = delta / 0.0022 * math.sqrt(5)
        return stats.nct.sf(critical, 4, noncentrality) + stats.nct.cdf(-critical, 4, noncentrality)

    assert mde == pytest.approx(optimize.brentq(lambda delta: power(delta) - 0.8, 0.001, 0.006), rel=1e-5)
    assert TTestPower().power(effect_size=mde / 0.0022, nobs=5, alpha=0.05) == pytest.approx(0.8, abs=1e-5)
    welch = minimum_detectable_difference(0.0022, 5, paired=False, alpha=0.05, n_b=3)
    assert TTestIndPower().power(
        effect_size=welch / 0.0022, nobs1=5, ratio=3 / 5, alpha=0.05
    ) == pytest.approx(0.8, abs=1e-5)
    assert welch > minimum_detectable_difference(0.0022, 5, paired=False, alpha=0.05) > mde
    assert math.isnan(minimum_detectable_difference(0.0, 5, paired=True, alpha=0.05))
    assert math.isnan(minimum_detectable_difference(0.0022, 1, paired=True, alpha=0.05))


def test_seeds_needed_is_the_first_sample_size_with_the_power():
    seeds = seeds_needed(0.002, 0.0022, paired=False, alpha=0.05)
    assert 20 <= seeds <= 27  # the estimate for a 0.2 pp difference at a seed sd of 0.0022
    effect = 0.002 / 0.0022
    assert TTestIndPower().power(effect_size=effect, nobs1=seeds, alpha=0.05) >= 0.8
    assert TTestIndPower().power(effect_size=effect, nobs1=seeds - 1, alpha=0.05) < 0.8
    assert (
        seeds_needed(0.002, 0.0022, paired=True, alpha=0.05) < seeds
    )  # one sample of differences with that sd


def test_seeds_needed_is_monotone_and_defined_for_large_effects():
    by_delta = [
        seeds_needed(delta, 0.0022, paired=False, alpha=0.05) for delta in (0.001, 0.002, 0.005, 0.01)
    ]
    assert by_delta == sorted(by_delta, reverse=True) and by_delta[0] > by_delta[-1]
    by_sd = [seeds_needed(0.002, sd, paired=True, alpha=0.05) for sd in (0.001, 0.002, 0.004)]
    assert by_sd == sorted(by_sd) and by_sd[0] < by_sd[-1]
    # A paired sd of 0.0009 against 0.5 pp: statsmodels' two-sided power is NaN here (scipy's noncentral t
    # fails in the far tail), the answer is still 3.
    assert seeds_needed(0.005, 0.0009, paired=True, alpha=0.05) == 3
    assert TTestPower().power(effect_size=0.005 / 0.0009, nobs=2, alpha=0.025, alternative="larger") < 0.8
    assert seeds_needed(0.05, 0.0009, paired=True, alpha=0.05) == 2
    assert math.isnan(seeds_needed(0.002, 0.0, paired=True, alpha=0.05))
    assert math.isnan(seeds_needed(0.002, math.nan, paired=False, alpha=0.05))


def test_compare_reports_power_from_the_pairs_own_spread():
    row = one_pair(GLOROT, HE)
    sd = (GLOROT - HE).std(ddof=1)
    assert row.sd == pytest.approx(sd, rel=1e-12)
    assert row.mde == pytest.approx(minimum_detectable_difference(sd, 5, paired=True, alpha=0.05), rel=1e-12)
    assert [row["seeds_for_0.1pp"], row["seeds_for_0.2pp"], row["seeds_for_0.5pp"]] == [
        seeds_needed(delta, sd, paired=True, alpha=0.05) for delta in (0.001, 0.002, 0.005)
    ]


# --- the Kaplan-Meier median's interval: its coverage is what it says ---


@pytest.mark.filterwarnings("error")
def test_five_runs_give_min_max_with_its_actual_coverage_not_95_percent():
    times = [410, 120, 500, 250, 300]
    result = survival(times, [True] * 5, horizon=1000)
    assert (result.median_ci_low, result.median_ci_high) == (120, 500)
    assert result.median_ci_coverage == pytest.approx(1 - 2 * 0.5**5)  # 93.75 %: short of 95 %


def test_the_order_statistic_interval_by_hand():
    # n = 20: [t_(6), t_(15)] covers P(6 <= B <= 14), B ~ Bin(20, 1/2), the narrowest at >= 95 %
    times = [float(t) for t in range(1, 21)]
    interval = median_interval(times, [True] * 20, 0.95)
    by_hand = sum(math.comb(20, k) for k in range(6, 15)) / 2**20
    assert (interval.low, interval.high) == (6.0, 15.0)
    assert interval.coverage == pytest.approx(by_hand, rel=1e-12) and by_hand >= 0.95
    assert sum(math.comb(20, k) for k in range(7, 14)) / 2**20 < 0.95  # one rank narrower falls short
    assert not interval.short_of_nominal


def test_the_stated_coverage_is_the_coverage_by_simulation():
    rng = np.random.default_rng(0)
    samples = rng.exponential(size=(20_000, 5))  # true median ln 2
    covered = (samples.min(axis=1) <= math.log(2)) & (math.log(2) <= samples.max(axis=1))
    stated = median_interval(samples[0], [True] * 5, 0.95).coverage
    assert covered.mean() == pytest.approx(stated, abs=0.005)
    assert median_interval(samples[0], [True] * 5, 0.95).short_of_nominal


def test_a_bound_among_runs_censored_at_the_horizon_is_open():
    # 7 runs, 4 reached: the rank-1 upper bound is the largest of all 7, censored: open
    interval = median_interval([100, 200, 300, 400, 1000, 1000, 1000], [True] * 4 + [False] * 3, 0.95)
    assert interval.low == 100 and math.isnan(interval.high)
    assert interval.coverage == pytest.approx(1 - 2 * 0.5**7)
    # censored at 150, before the event at 300: the largest true time may be the censored one, so the rank-1
    # upper bound is open; the lower bound is the smallest observed time, which no true time undercuts
    interval = median_interval([100, 150, 300], [True, False, True], 0.95)
    assert interval.low == 100 and math.isnan(interval.high) and interval.coverage == 0.75


def test_the_table_prints_the_intervals_coverage():
    row = pd.DataFrame([{"steps_to_97_km_median": 300.0, "steps_to_97_km_ci_low": 120.0,
                         "steps_to_97_km_ci_high": 500.0, "steps_to_97_km_ci_coverage": 0.9375,
                         "reached_97": 5, "total_97": 5}]).itertuples().__next__()  # fmt: skip
    assert km_cell(row, "97") == "300 [120, 500; 93.8%] (5/5)"
