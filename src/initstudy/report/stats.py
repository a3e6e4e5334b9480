"""Statistics across seeds: summaries with confidence intervals and corrected pairwise tests (scipy)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
THRESHOLDS = ("95", "97", "98")

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


def train_loss_auc(history: pd.DataFrame) -> float:
    """Area under the per-epoch train-loss curve (loss x epochs, trapezoid): lower = faster convergence."""
    curve = history[history.metric == "train/loss"].sort_values("epoch")
    if len(curve) < 2:
        return math.nan
    return float(np.trapezoid(curve.value.to_numpy(), curve.epoch.to_numpy()))


def summarize(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per initializer, in the order of first appearance in the manifest."""
    rows = []
    for init, group in runs.groupby("init", sort=False):
        done = group[group.status == "complete"]
        acc = done["test/acc"].astype(float) if len(done) else pd.Series(dtype=float)
        low, high = t_interval(acc)
        auc = [train_loss_auc(history[(history.init == init) & (history.seed == seed)]) for seed in done.seed]
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
            "loss_mean": done["test/loss"].astype(float).mean() if len(done) else math.nan,
            "loss_std": done["test/loss"].astype(float).std(ddof=1) if len(done) > 1 else math.nan,
            "train_loss_final_mean": done["train/loss"].astype(float).mean() if len(done) else math.nan,
            "train_loss_auc_mean": float(np.nanmean(auc))
            if auc and not all(map(math.isnan, auc))
            else math.nan,
        }
        for threshold in THRESHOLDS:
            for unit in ("epochs", "steps"):
                reached = done[f"{unit}_to_{threshold}"].dropna() if len(done) else pd.Series(dtype=float)
                row[f"{unit}_to_{threshold}_median"] = reached.median() if len(reached) else math.nan
            row[f"reached_{threshold}"] = len(reached)
        row["seed_notebook_acc"] = SEED_NOTEBOOK.get(init, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Welch's t-test of mean test accuracy for every pair, Benjamini-Hochberg adjusted across pairs."""
    return adjust(pairwise(runs), alpha)


def pairwise(runs: pd.DataFrame) -> pd.DataFrame:
    """Welch's t-test of mean test accuracy for every pair of initializers in ``runs``, p-values unadjusted:
    a grouped sweep tests within each group, then :func:`adjust` corrects over all of its tests at once."""
    done = runs[runs.status == "complete"]
    samples = {
        init: group["test/acc"].astype(float).to_numpy() for init, group in done.groupby("init", sort=False)
    }
    rows = []
    for a, b in itertools.combinations(samples, 2):
        x, y = samples[a], samples[b]
        row = {"init_a": a, "init_b": b, "n_a": len(x), "n_b": len(y), "diff_mean": x.mean() - y.mean()}
        if len(x) >= 2 and len(y) >= 2 and (x.std() > 0 or y.std() > 0):
            with warnings.catch_warnings():
                # A constant sample (e.g. zeros: 0.1135 in every seed) trips scipy's cancellation warning;
                # Welch's test stays valid with one zero-variance group.
                warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
                result = stats.ttest_ind(x, y, equal_var=False)
            interval = result.confidence_interval(CONFIDENCE)
            row.update(
                t=float(result.statistic),
                df=float(result.df),
                p_value=float(result.pvalue),
                diff_ci95_low=float(interval.low),
                diff_ci95_high=float(interval.high),
            )
        elif len(x) >= 2 and len(y) >= 2:  # both constant: a difference is certain, equality too
            same = bool(x[0] == y[0])
            row.update(
                t=math.nan,
                df=math.nan,
                p_value=1.0 if same else 0.0,
                diff_ci95_low=row["diff_mean"],
                diff_ci95_high=row["diff_mean"],
            )
        else:
            row.update(
                t=math.nan, df=math.nan, p_value=math.nan, diff_ci95_low=math.nan, diff_ci95_high=math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


def adjust(frame: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Benjamini-Hochberg over every tested row of ``frame``: one family, whatever groups it spans."""
    if frame.empty:
        return frame
    frame = frame.copy()
    tested = frame.p_value.notna()
    frame["p_adjusted"] = math.nan
    if tested.any():
        frame.loc[tested, "p_adjusted"] = stats.false_discovery_control(
            frame.loc[tested, "p_value"], method="bh"
        )
    frame["significant"] = frame.p_adjusted < alpha
    frame["correction"] = "benjamini-hochberg"
    return frame
