"""Statistics across seeds: per-initializer summaries and the pairwise comparisons of every endpoint.

The routines themselves (intervals, Kaplan-Meier, paired/Welch tests, TOST, power) live in
:mod:`initstudy.report.inference`; this module applies them to a sweep's runs.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from initstudy.report import inference
from initstudy.report.endpoints import Endpoint, first_evaluations, planned_steps, times_to
from initstudy.train.convergence import THRESHOLDS, threshold_key

CONFIDENCE = inference.CONFIDENCE

# The seed notebook's test accuracies (one run each, Keras, seed 42), by this study's initializer names.
SEED_NOTEBOOK = {"zeros": 0.1135, "random_normal": 0.9795, "glorot_uniform": 0.9836, "he_uniform": 0.9785}


def t_interval(values: pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean (NaN for fewer than two values; a point if no spread)."""
    values = values.dropna()
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean, sem = float(values.mean()), float(values.std(ddof=1)) / math.sqrt(n)
    if sem == 0:
        return (mean, mean)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return (float(low), float(high))


def summarize(runs: pd.DataFrame, per_run: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per initializer, in the order of first appearance in the manifest. ``per_run``: the endpoints
    of every complete run (:func:`initstudy.report.endpoints.run_endpoints`); ``history``: the runs' step
    series, which place the first evaluation pass after step 0.

    Time to a threshold crossed inside the first evaluation interval is known only as "by the first pass"
    (:func:`initstudy.report.endpoints.times_to`): ``steps_to_<t>_in_first_interval`` counts those runs, and
    ``steps_to_<t>_upper_bound`` is True when they are at least half, so that the Kaplan-Meier median is the
    first pass's step as an upper bound (the true median is at or below it; the interval's lower end is then
    0, and the restricted mean is an upper bound whenever the count is not 0)."""
    horizon = planned_steps(runs[runs.status == "complete"])
    first_passes = first_evaluations(history) if history is not None and len(history) else {}
    times = {threshold: times_to(runs, threshold, first_passes) for threshold in THRESHOLDS}
    rows = []
    for init, group in runs.groupby("init", sort=False):
        done = group[group.status == "complete"]
        mine = per_run[per_run.init == init] if len(per_run) else per_run
        acc = mine["test/acc"].astype(float) if len(mine) else pd.Series(dtype=float)
        low, high = t_interval(acc)
        pi_low, pi_high = inference.prediction_interval(acc)
        row = {
            "init": init,
            "n_runs": len(group),
            "n_complete": len(done),
            "n_failed": int((group.status != "complete").sum()),
            "n_diverged": int(done.get("diverged", pd.Series(dtype=bool)).fillna(False).astype(bool).sum()),
            "acc_mean": acc.mean(),
            "acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
            "acc_min": acc.min(),
            "acc_max": acc.max(),
            "acc_ci95_low": low,
            "acc_ci95_high": high,
            "acc_pi95_low": pi_low,
            "acc_pi95_high": pi_high,
            "loss_mean": _mean(done, "test/loss"),
            "loss_std": _std(done, "test/loss"),
            "val_acc_mean": _mean(done, "val/acc"),
            "val_loss_final_mean": _mean(done, "val/loss"),
            "val_loss_min_mean": _mean(done, "val/loss_min"),
            "val_loss_min_step_median": _median(done, "val/loss_min_step"),
            "train_loss_final_mean": _mean(done, "train/loss"),
            "train_loss_auc_mean": _mean(done, "train/loss_auc"),
            "horizon_steps": horizon,
        }
        for threshold, frame in times.items():
            key = threshold_key(threshold)
            own = frame[frame.init == init]
            curve = inference.survival(own.steps.tolist(), own.reached.tolist(), horizon)
            bounded = own.steps[own.bounded]
            upper = bool(len(bounded) and curve.median <= bounded.max())
            low_bounded = bool(len(bounded) and curve.median_ci_low <= bounded.max())
            row.update({
                f"steps_to_{key}_km_median": curve.median,
                f"steps_to_{key}_upper_bound": upper,
                f"steps_to_{key}_in_first_interval": len(bounded),
                f"steps_to_{key}_km_ci_low": 0.0 if low_bounded else curve.median_ci_low,
                f"steps_to_{key}_km_ci_high": curve.median_ci_high,
                f"steps_to_{key}_km_ci_coverage": curve.median_ci_coverage,
                f"steps_to_{key}_rmst": curve.rmst,
                f"reached_{key}": curve.n_reached,
                f"total_{key}": curve.n_total,
            })  # fmt: skip
        row["seed_notebook_acc"] = SEED_NOTEBOOK.get(init, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(dtype=float)


def _mean(frame: pd.DataFrame, column: str) -> float:
    values = _column(frame, column).dropna()
    return float(values.mean()) if len(values) else math.nan


def _std(frame: pd.DataFrame, column: str) -> float:
    values = _column(frame, column).dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _median(frame: pd.DataFrame, column: str) -> float:
    values = _column(frame, column).dropna()
    return float(values.median()) if len(values) else math.nan


UNTRAINED = "did not train vs trained"


def untrained(runs: pd.DataFrame) -> set[str]:
    """Initializers none of whose complete runs learned anything: every run predicts a single class for the
    whole test set (``zeros``). Their losses still vary a little with the seed, but a comparison with them
    answers no question worth a test."""
    done = runs[runs.status == "complete"]
    if "test/distinct_predictions" not in done:
        return set()
    constant = done.groupby("init", sort=False)["test/distinct_predictions"].apply(
        lambda d: bool((d == 1).all())
    )
    return {init for init, flat in constant.items() if flat}


def compare_endpoints(
    per_run: pd.DataFrame,
    endpoints: list[Endpoint],
    margin: float,
    *,
    alpha: float,
    paired: bool = True,
    set_apart: set[str] = frozenset(),  # type: ignore[assignment]
) -> pd.DataFrame:
    """Every pair of initializers on every endpoint (p-values unadjusted: :func:`adjust` corrects them per
    endpoint over the whole sweep), every test at ``alpha`` (the claims file's level:
    initstudy.report.study_rules.difference_rule); pairs of one initializer in ``set_apart`` (:func:`untrained`)
    with one outside it are marked degenerate, outside every family. Runs are paired by seed when ``paired``:
    within a group, runs with the same seed share the order of the training data (and, for initializers drawing
    from the same distribution family, the random draws), so their difference removes that shared variation."""
    frames = []
    for endpoint in endpoints:
        if endpoint.column not in per_run:
            continue
        samples = {
            init: group.set_index("seed")[endpoint.column].astype(float)
            for init, group in per_run.groupby("init", sort=False)
        }
        if len(samples) < 2:
            continue
        frames.append(
            inference.compare(
                samples,
                endpoint=endpoint.label,
                paired=paired,
                alpha=alpha,
                margin=margin if endpoint.accuracy else None,
            )
        )
    if not frames:
        return pd.DataFrame()
    # Column names that are identifiers (itertuples): seeds_for_0.1pp -> seeds_for_0_1pp.
    out = pd.concat(frames, ignore_index=True).rename(columns=lambda c: c.replace(".", "_"))
    # A pair with an initializer that did not train is reported apart on every endpoint, like a constant.
    apart = (out.init_a.isin(set_apart) != out.init_b.isin(set_apart)) & (out.degenerate == "")
    out.loc[apart, "degenerate"] = UNTRAINED
    out.loc[apart, "verdict"] = f"{UNTRAINED}: not tested for equivalence"
    out.loc[apart, "equivalent"] = False
    return out


def adjust(comparisons: pd.DataFrame, *, alpha: float) -> pd.DataFrame:
    """Benjamini-Hochberg per endpoint over the testable pairs of the whole sweep (every group at once), with
    ``significant`` at ``alpha`` (the claims file's level: study_rules.difference_rule)."""
    if comparisons.empty:
        return comparisons
    return inference.adjust(comparisons, alpha=alpha, by="endpoint")
