"""Inference across seeds: what a handful of runs per initializer can and cannot tell (scipy, statsmodels).

Five seeds give a mean and a spread, not certainty. This module turns them into statements a reader can
check: where one more run would land (prediction interval), whether two initializers differ (paired or Welch
t, Benjamini-Hochberg within each endpoint) or are equivalent within a margin (TOST), how large a difference
is in units of its noise (d_z or g, with exact noncentral-t intervals), how small a difference these seeds
could have detected, and how many seeds a smaller one would need. Time-to-threshold endpoints are censored
(some runs never reach 97%), so they get Kaplan-Meier medians and restricted means instead of t-tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.duration.survfunc import SurvfuncRight
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from initstudy.report.median_interval import median_interval

CONFIDENCE = 0.95
# No default level: every test's alpha is the caller's, for the report the one rule of
# conf/experiment/claims/study.yaml (initstudy.report.study_rules.difference_rule), so no constant here decides it.
POWER = 0.80
# No default margin either: the report's is the value of the rule accuracy_equivalent_seeds_only of the same
# file (initstudy.report.study_rules.seeds_equivalence_rule).
SEED_TARGETS = (0.001, 0.002, 0.005)  # differences (0.1/0.2/0.5 pp) for "seeds needed"

SEED_COLUMNS = tuple(f"seeds_for_{delta * 100:g}pp" for delta in SEED_TARGETS)
COLUMNS = (
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
    *SEED_COLUMNS,
)
TOO_FEW = "too few runs"
BOTH_CONSTANT = "both constant"
CONSTANT_VS_SAMPLE = "constant vs sample"
# Paired only: every seed moves both initializers by the same amount (e.g. two names for one initializer
# give byte-identical runs). The differences have no spread, so no t exists, as with two constant samples.
CONSTANT_DIFFERENCE = "constant difference"


def prediction_interval(
    values: Sequence[float] | pd.Series, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Where one new run (a new seed) should land: mean ± t_{n-1} · s · sqrt(1 + 1/n).

    A confidence interval of the mean shrinks as seeds accumulate; the spread a reader sees when re-running
    one seed does not, hence this interval next to it. NaN for fewer than two values; a point if no spread.
    """
    values = pd.Series(values, dtype=float).dropna()
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if values.max() == values.min():  # not sd == 0: five copies of 0.1135 have an sd of 1e-17
        return (mean, mean)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sd * math.sqrt(1 + 1 / n))
    return (float(low), float(high))


# --- time to a threshold: right-censored, so Kaplan-Meier rather than a mean over the runs that got there ---


@dataclass(frozen=True)
class Survival:
    """Time to an event (e.g. optimizer steps to 97% validation accuracy) over one initializer's runs.

    A median over only the runs that reached the threshold flatters an initializer that often fails to;
    Kaplan-Meier counts the others as "not yet by time T" instead of dropping them.
    """

    n_total: int
    n_reached: int
    median: float  # NaN while the Kaplan-Meier curve stays at or above 0.5: half the runs never got there
    median_ci_low: float  # the order-statistic interval of initstudy.report.median_interval
    median_ci_high: float  # NaN when the interval is unbounded within the observed times
    median_ci_coverage: (
        float  # its exact coverage: below the confidence asked for when too few runs (5: 93.75 %)
    )
    rmst: float  # restricted mean time to the event, up to `horizon` (a run that never gets there counts horizon)
    horizon: float

    def counts(self) -> str:
        """How many runs reached the threshold, e.g. "3/5"."""
        return f"{self.n_reached}/{self.n_total}"


def survival(
    times: Sequence[float], reached: Sequence[bool], horizon: float, confidence: float = CONFIDENCE
) -> Survival:
    """Kaplan-Meier median, an interval for it with its exact coverage, and the restricted mean time.

    ``times[i]`` is when run i reached the threshold, or, if ``reached[i]`` is False, the last time it was
    observed (usually the horizon): it is censored there. The median follows statsmodels (as SAS does): the
    first event time where the survival curve drops *below* 0.5. The restricted mean is the exact area under
    the Kaplan-Meier step function from 0 to ``horizon``; unlike the median it exists even when most runs
    never reach the threshold, and it ranks initializers by both speed and reliability.

    The median's interval is the order-statistic one (:func:`initstudy.report.median_interval.median_interval`),
    not statsmodels' cloglog interval: with 5 runs that one is [min, max], labelled 95 % but covering 93.75 %.
    The order-statistic interval carries its actual coverage, so a table can say when it falls short.
    """
    fit = _kaplan_meier(times, reached)
    n_total, n_reached = (0, 0) if fit is None else (len(fit.time), int(fit.status.sum()))
    if fit is None or n_reached == 0:
        return Survival(
            n_total, n_reached, math.nan, math.nan, math.nan, math.nan, float(horizon), float(horizon)
        )
    interval = median_interval(times, reached, confidence)
    return Survival(
        n_total=n_total,
        n_reached=n_reached,
        median=_finite(fit.quantile(0.5)),
        median_ci_low=interval.low,
        median_ci_high=interval.high,
        median_ci_coverage=interval.coverage,
        rmst=_restricted_mean(fit, float(horizon)),
        horizon=float(horizon),
    )


def km_curve(times: Sequence[float], reached: Sequence[bool]) -> pd.DataFrame:
    """The Kaplan-Meier step function as points (time, survival) for a ``steps-post`` plot.

    Starts at (0, 1.0) and ends at the last observed time, so that the curve of runs censored at the
    horizon is drawn up to the horizon instead of stopping at the last event.
    """
    fit = _kaplan_meier(times, reached)
    time, surv = [0.0], [1.0]
    if fit is not None:
        time += [float(t) for t in fit.surv_times]
        surv += [float(s) for s in fit.surv_prob]
        last = float(fit.time.max())
        if last > time[-1]:
            time.append(last)
            surv.append(surv[-1])
    return pd.DataFrame({"time": time, "survival": surv})


def _kaplan_meier(times: Sequence[float], reached: Sequence[bool]) -> SurvfuncRight | None:
    """statsmodels' Kaplan-Meier fit (event = threshold reached); None for no runs at all."""
    time = np.asarray(times, dtype=float)
    status = np.asarray(reached, dtype=bool)
    if time.shape != status.shape or time.ndim != 1:
        raise ValueError(
            f"times and reached must be two lists of one length, not {time.shape} and {status.shape}"
        )
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        raise ValueError("times must be finite and non-negative: a run that never reached it is censored")
    if len(time) == 0:
        return None
    return SurvfuncRight(time, status.astype(float))


def _restricted_mean(fit: SurvfuncRight, horizon: float) -> float:
    """Exact area under the Kaplan-Meier step function on [0, horizon] (1 until the first event)."""
    inside = fit.surv_times < horizon
    edges = np.concatenate(([0.0], fit.surv_times[inside], [horizon]))
    heights = np.concatenate(([1.0], fit.surv_prob[inside]))
    return float(np.sum(heights * np.diff(edges)))


def _finite(value: float) -> float:
    """statsmodels marks an open end with inf; the report's tables read NaN as "not estimable"."""
    return float(value) if np.isfinite(value) else math.nan


# --- two initializers at a time ---


def compare(
    samples: Mapping[str, pd.Series],
    *,
    endpoint: str,
    paired: bool,
    alpha: float,
    margin: float | None = None,
    confidence: float = CONFIDENCE,
    power: float = POWER,
) -> pd.DataFrame:
    """Every pair of initializers on one endpoint: difference, test, effect size, equivalence and power.

    ``samples`` maps an initializer to its values indexed by seed (NaN = missing run). With ``paired``, the
    pairs share seeds (same data order, same batches), so the seed-to-seed noise common to both cancels:
    the test runs on per-seed differences over the seeds both have, if at least two. p-values are raw;
    :func:`adjust` corrects them within each family. Rows flagged ``degenerate`` ("constant vs sample",
    "both constant", "constant difference", "too few runs") are reported apart and never equivalence-tested:
    a constant sample (the zeros initializer gives 0.1135 in every seed) makes any "test" a statement about
    the other sample alone. One row per pair, in the mapping's order; columns as in ``COLUMNS``.
    """
    clean = {name: _clean(name, values) for name, values in samples.items()}
    rows = [
        _compare_pair(endpoint, a, b, clean[a], clean[b], paired, margin, alpha, confidence, power)
        for a, b in itertools.combinations(clean, 2)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _clean(name: str, values: pd.Series) -> pd.Series:
    """Float values by seed without the missing runs; a seed twice would make pairing ambiguous."""
    values = pd.Series(values, dtype=float).dropna()
    if not values.index.is_unique:
        raise ValueError(f"{name}: a seed appears twice in {list(values.index)}")
    return values


def _compare_pair(
    endpoint: str,
    a: str,
    b: str,
    sample_a: pd.Series,
    sample_b: pd.Series,
    paired: bool,
    margin: float | None,
    alpha: float,
    confidence: float,
    power: float,
) -> dict[str, object]:
    """One row of :func:`compare`: the design decided first, as every number after depends on it."""
    common = sample_a.index.intersection(sample_b.index, sort=False)
    if paired and len(common) >= 2:
        design, x, y = "paired", sample_a[common].to_numpy(), sample_b[common].to_numpy()
    else:
        design, x, y = "welch", sample_a.to_numpy(), sample_b.to_numpy()
    is_paired = design == "paired"
    degenerate = _degeneracy(x, y, design)
    effect, effect_low, effect_high = _effect_size(x, y, design, degenerate, confidence)
    tost_p = _tost(x, y, design, margin) if margin is not None and not degenerate else math.nan
    equivalent = bool(tost_p < alpha)
    sd = _noise_sd(x, y, design) if degenerate != TOO_FEW else math.nan
    return {
        "endpoint": endpoint,
        "init_a": a,
        "init_b": b,
        "design": design,
        "n_a": len(sample_a),
        "n_b": len(sample_b),
        "n_pairs": len(x) if is_paired else 0,
        **_difference_test(x, y, design, degenerate, confidence),
        "effect_size": effect,
        "effect_size_name": "Cohen's d_z" if is_paired else "Hedges' g",
        "effect_ci_low": effect_low,
        "effect_ci_high": effect_high,
        "degenerate": degenerate,
        "margin": math.nan if margin is None else float(margin),
        "tost_p": tost_p,
        "equivalent": equivalent,
        "verdict": _verdict(endpoint, degenerate, margin, equivalent),
        "sd": sd,
        "mde": minimum_detectable_difference(sd, len(x), is_paired, alpha=alpha, power=power, n_b=len(y)),
        **{
            column: seeds_needed(delta, sd, is_paired, alpha=alpha, power=power)
            for column, delta in zip(SEED_COLUMNS, SEED_TARGETS, strict=True)
        },
    }


def _degeneracy(x: np.ndarray, y: np.ndarray, design: str) -> str:
    """Why a pair cannot take the ordinary test ("" if it can). max == min, not std == 0: the mean of five
    copies of 0.1135 need not be 0.1135 in floating point, so a constant sample's std can come out 1e-17."""
    if len(x) < 2 or len(y) < 2:
        return TOO_FEW
    constant_x, constant_y = np.ptp(x) == 0, np.ptp(y) == 0
    if constant_x and constant_y:
        return BOTH_CONSTANT
    if constant_x or constant_y:
        return CONSTANT_VS_SAMPLE
    if design == "paired" and np.ptp(x - y) == 0:
        return CONSTANT_DIFFERENCE
    return ""


def _difference_test(
    x: np.ndarray, y: np.ndarray, design: str, degenerate: str, confidence: float
) -> dict[str, float]:
    """Mean difference A - B, its confidence interval, t, df and two-sided p.

    A constant sample has no spread to pool: the only uncertainty is the other sample's, so the test is the
    one-sample t of the varying sample against the constant (what Welch's test reduces to, without its
    cancellation warning; for a paired design, the paired t itself).
    """
    if degenerate == TOO_FEW:
        diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        return _untested(diff, math.nan, math.nan)
    if degenerate in (BOTH_CONSTANT, CONSTANT_DIFFERENCE):
        diff = float(np.mean(x - y)) if design == "paired" else float(x[0] - y[0])
        return _untested(diff, diff, diff)
    if degenerate == CONSTANT_VS_SAMPLE:
        differences = _against_constant(x, y, design)
        result, diff = stats.ttest_1samp(differences, 0.0), float(differences.mean())
    elif design == "paired":
        result, diff = stats.ttest_rel(x, y), float(np.mean(x - y))
    else:
        result, diff = stats.ttest_ind(x, y, equal_var=False), float(x.mean() - y.mean())
    interval = result.confidence_interval(confidence)
    return {
        "diff_mean": diff,
        "diff_ci_low": float(interval.low),
        "diff_ci_high": float(interval.high),
        "t": float(result.statistic),
        "df": float(result.df),
        "p_value": float(result.pvalue),
    }


def _untested(diff: float, low: float, high: float) -> dict[str, float]:
    nan = math.nan
    return {"diff_mean": diff, "diff_ci_low": low, "diff_ci_high": high, "t": nan, "df": nan, "p_value": nan}


def _against_constant(x: np.ndarray, y: np.ndarray, design: str) -> np.ndarray:
    """A - B as a sample whose spread is the varying initializer's alone."""
    if design == "paired":
        return x - y
    return x - y[0] if np.ptp(y) == 0 else x[0] - y


def _effect_size(
    x: np.ndarray, y: np.ndarray, design: str, degenerate: str, confidence: float
) -> tuple[float, float, float]:
    """Standardized difference and its interval; NaN where there is no spread to standardize by."""
    if degenerate not in ("", CONSTANT_VS_SAMPLE):
        return (math.nan, math.nan, math.nan)
    if design == "paired":
        return _cohens_dz(x - y, confidence)
    return _hedges_g(x, y, confidence)


def _cohens_dz(differences: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """d_z = mean(d) / sd(d), with the exact interval: t = d_z·sqrt(n) is noncentral t with n - 1 df and
    noncentrality δ·sqrt(n), so inverting its distribution bounds δ (Steiger & Fouladi)."""
    n = len(differences)
    dz = float(differences.mean() / differences.std(ddof=1))
    low, high = _noncentrality_interval(dz * math.sqrt(n), n - 1, confidence)
    return (dz, low / math.sqrt(n), high / math.sqrt(n))


def _hedges_g(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Hedges' g: Cohen's d with the pooled sd, times the exact small-sample correction
    J = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2)) (d overstates δ by ~10% at 5 + 5 runs).

    The interval is for the population δ, from the noncentral t of Student's pooled t (df = n_a + n_b - 2),
    not the Hedges-Olkin normal approximation, which is poor at five runs a side. It assumes equal
    variances, as the pooled sd in g itself does.
    """
    n_a, n_b = len(x), len(y)
    df = n_a + n_b - 2
    d = float((x.mean() - y.mean()) / _pooled_sd(x, y))
    correction = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)
    scale = math.sqrt(1 / n_a + 1 / n_b)
    low, high = _noncentrality_interval(d / scale, df, confidence)
    return (d * correction, low * scale, high * scale)


def _noncentrality_interval(t_obs: float, df: float, confidence: float) -> tuple[float, float]:
    """The noncentralities under which ``t_obs`` sits at the upper and lower (1 - confidence)/2 tails.

    At a fixed t the noncentral t's cdf falls as the noncentrality grows, so each bound is the one root of a
    monotone function. Solved for |t| and mirrored (t, δ -> -t, -δ leaves the distribution's shape), so no
    bracket reaches a noncentrality of the sign opposite to a large t, where scipy's cdf is NaN. NaN bounds
    where the cdf is not computable at all (|t| near 1e5, only ever against a constant sample).
    """
    tail = (1 - confidence) / 2
    t = abs(t_obs)

    def above_lower(noncentrality: float) -> float:
        return float(stats.nct.cdf(t, df, noncentrality)) - (1 - tail)

    def above_upper(noncentrality: float) -> float:
        return float(stats.nct.cdf(t, df, noncentrality)) - tail

    # Past the central t's quantile the lower bound lies in (0, t); short of it, below 0.
    low = _root(above_lower, 0.0, t) if above_lower(0.0) > 0 else _root_beyond(above_lower, 0.0, -1.0)
    high = _root_beyond(above_upper, t, 1.0)
    return (low, high) if t_obs >= 0 else (-high, -low)


def _root_beyond(func: Callable[[float], float], start: float, direction: float) -> float:
    """Root of a monotone ``func`` on the ``direction`` side of ``start``: a bracket doubling in width."""
    start_sign = func(start) > 0
    width = 1.0
    for _ in range(64):
        far = start + direction * width
        value = func(far)
        if math.isnan(value):
            return math.nan
        if (value > 0) != start_sign:
            return _root(func, min(start, far), max(start, far))
        width *= 2
    return math.nan


def _root(func: Callable[[float], float], low: float, high: float) -> float:
    try:
        return float(optimize.brentq(func, low, high))
    except ValueError:  # scipy's cdf gave NaN inside the bracket
        return math.nan


def _tost(x: np.ndarray, y: np.ndarray, design: str, margin: float) -> float:
    """p of the two one-sided tests that A - B lies within ±margin: equivalence, not just "no difference
    found". Rejects exactly when the (1 - 2α) confidence interval of A - B lies inside the margin."""
    if design == "paired":
        return float(ttost_paired(x, y, -margin, margin)[0])
    return float(ttost_ind(x, y, -margin, margin, usevar="unequal")[0])


def _verdict(endpoint: str, degenerate: str, margin: float | None, equivalent: bool) -> str:
    """The equivalence finding in the report's words (the difference's is `significant`, after adjust)."""
    if degenerate:
        return f"{degenerate}: not tested for equivalence"
    if margin is None:
        return "no equivalence margin: difference test only"
    bound = _margin_text(endpoint, margin)
    return f"equivalent within {bound}" if equivalent else f"not shown equivalent ({bound})"


def _margin_text(endpoint: str, margin: float) -> str:
    """±0.5 pp for an accuracy (a fraction: `test/acc`, or a label saying "accuracy"), the plain number for any
    other endpoint."""
    if "accuracy" in endpoint or endpoint.rsplit("/", 1)[-1].startswith("acc"):
        return "±" + f"{margin * 100:.2f}".rstrip("0").rstrip(".") + " pp"
    return f"±{margin:g}"


def _noise_sd(x: np.ndarray, y: np.ndarray, design: str) -> float:
    """The sd a difference must stand out from: of per-seed differences (paired) or pooled (welch)."""
    return float(np.std(x - y, ddof=1)) if design == "paired" else _pooled_sd(x, y)


def _pooled_sd(x: np.ndarray, y: np.ndarray) -> float:
    n_a, n_b = len(x), len(y)
    return math.sqrt(((n_a - 1) * np.var(x, ddof=1) + (n_b - 1) * np.var(y, ddof=1)) / (n_a + n_b - 2))


# --- multiple comparisons ---


def adjust(frame: pd.DataFrame, *, alpha: float, by: str | Sequence[str] | None = "endpoint") -> pd.DataFrame:
    """Benjamini-Hochberg within each family of tests: the rows sharing the ``by`` columns (None: all rows).

    Families are per endpoint by default: accuracy and loss answer different questions, and pooling them
    would let one endpoint's many small p-values lower the bar for the other's. Degenerate rows are not
    tests of the family's kind and stay out (p_adjusted NaN, significant False, family_size 0). Works on
    the positions of the rows, so frames concatenated from several ``compare`` calls need no new index.
    """
    frame = frame.copy()
    p_adjusted = np.full(len(frame), math.nan)
    family_size = np.zeros(len(frame), dtype=int)
    tested = ((frame["degenerate"] == "") & frame["p_value"].notna()).to_numpy()
    positions = np.flatnonzero(tested)
    for members in _families(frame.iloc[positions], by):
        rows = positions[members]
        p_adjusted[rows] = stats.false_discovery_control(frame["p_value"].to_numpy()[rows], method="bh")
        family_size[rows] = len(rows)
    frame["p_adjusted"] = p_adjusted
    frame["significant"] = p_adjusted < alpha  # NaN compares False
    frame["family_size"] = family_size
    return frame


def _families(tested: pd.DataFrame, by: str | Sequence[str] | None) -> list[np.ndarray]:
    """Positions (within ``tested``) of each family's rows."""
    if tested.empty:
        return []
    if by is None:
        return [np.arange(len(tested))]
    keys = [by] if isinstance(by, str) else list(by)
    return list(tested.groupby(keys, sort=False, dropna=False).indices.values())


# --- power: what these seeds could have seen, and what more seeds would see ---


def minimum_detectable_difference(
    sd: float,
    n: int,
    paired: bool,
    *,
    alpha: float,
    power: float = POWER,
    n_b: int | None = None,
) -> float:
    """The smallest true difference (in the endpoint's units) that a two-sided t-test at ``alpha`` finds
    with probability ``power``, given the noise ``sd`` and ``n`` pairs (paired) or ``n`` and ``n_b`` runs
    (two samples; ``n_b`` defaults to ``n``).

    "Not significant" means little unless the difference one cares about is above this; NaN where no t-test
    exists (fewer than two runs, or no spread).
    """
    n_b = n if n_b is None else n_b
    if not sd > 0 or n < 2 or (not paired and n_b < 2):
        return math.nan
    analysis, size = _power_analysis(paired)
    extra = {} if paired else {"ratio": n_b / n}
    effect = analysis.solve_power(
        effect_size=None, alpha=alpha / 2, power=power, alternative="larger", **{size: n}, **extra
    )
    return float(effect) * sd


def seeds_needed(delta: float, sd: float, paired: bool, *, alpha: float, power: float = POWER) -> float:
    """Seeds per initializer for a two-sided t-test at ``alpha`` to find a true difference ``delta`` with
    probability ``power``: the planning side of :func:`minimum_detectable_difference`.

    Paired: ``sd`` is that of per-seed differences (one-sample t on them); otherwise the common sd of two
    independent samples of equal size. At least 2 (the smallest t-test); NaN if ``sd`` is 0 or NaN.
    """
    if not sd > 0 or not delta > 0:
        return math.nan
    effect = delta / sd
    analysis, size = _power_analysis(paired)
    if analysis.power(effect_size=effect, alpha=alpha / 2, alternative="larger", **{size: 2}) >= power:
        return 2.0  # the solver searches above 2 only
    solution = analysis.solve_power(
        effect_size=effect, alpha=alpha / 2, power=power, alternative="larger", **{size: None}
    )
    return float(math.ceil(solution)) if math.isfinite(solution) else math.nan


def _power_analysis(paired: bool) -> tuple[TTestPower | TTestIndPower, str]:
    """statsmodels' power for the design and the name of its sample-size argument.

    Both callers ask for a two-sided test at α as its upper tail at α/2 (``alternative="larger"``): the
    lower tail (an effect "found" with the wrong sign) adds under 1e-6 at 80% power, so leaving it out errs
    by at most that, on the safe side; and it is where scipy's noncentral t returns NaN once the effect is
    large (a paired sd of 0.0009 against 0.5 pp), which would make the two-sided power NaN.
    """
    return (TTestPower(), "nobs") if paired else (TTestIndPower(), "nobs1")
