"""Is one initializer faster than another? Time to a threshold compared within each seed: an exact permutation
test and a log-rank test stratified by seed.

Two initializers trained with the same seed share the data order, so their times pair up. Under the null
hypothesis that the initializer does not matter, the two times of a seed are exchangeable: swapping them flips
the sign of that seed's difference. The p-value is the share of the 2^n sign patterns whose mean difference is
at least as far from 0 as the observed one, enumerated exactly (no sampling, so the report's bytes repeat).
The effect is printed in steps (the mean per-seed difference) and as a ratio of mean times, beside the
statement it tests.

Censoring: a run that never reaches the threshold enters at the step it stopped (a lower bound on its time),
and a crossing inside the first evaluation interval at that pass's step (an upper bound,
:func:`initstudy.report.endpoints.times_to`); the counts of both are printed with the test, since each pulls the
difference towards 0 for the slower or the faster side respectively.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from initstudy.report.endpoints import first_evaluations, times_to

# Exact enumeration costs 2^n patterns; past this many seeds the pairs are too many to list.
MAX_EXACT_SEEDS = 20


def paired_permutation(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean of a - b, two-sided exact p) over every within-pair swap of ``a`` and ``b`` (same length, pair by
    position). A pattern counts as extreme when its |mean| reaches the observed one up to rounding."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(differences)
    if n == 0 or n > MAX_EXACT_SEEDS:
        raise ValueError(f"paired_permutation needs 1 to {MAX_EXACT_SEEDS} pairs, got {n}")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = signs @ differences / n
    observed = float(differences.mean())
    tolerance = 1e-9 * max(1.0, float(np.abs(differences).max()))
    p = float(np.mean(np.abs(means) >= abs(observed) - tolerance))
    return observed, p


def stratified_logrank(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Two-sided p of the log-rank test of ``a`` against ``b`` stratified by seed (statsmodels' ``survdiff``):
    each seed's pair is its own stratum, so the test is paired by seed, and a run that never reached the
    threshold is censored at its last step instead of entering as a time. ``a``, ``b``: indexed by seed, with
    ``steps`` and ``reached``. Unlike the exact permutation test it can fall below 0.05 with 5 seeds (0.025
    when the same initializer is first in all 5)."""
    from statsmodels.duration.survfunc import survdiff

    seeds = np.concatenate([a.index.to_numpy(), b.index.to_numpy()])
    time = np.concatenate([a.steps.to_numpy(float), b.steps.to_numpy(float)])
    status = np.concatenate([a.reached.to_numpy(int), b.reached.to_numpy(int)])
    group = np.repeat([0, 1], [len(a), len(b)])
    if status.sum() == 0:
        return float("nan")
    try:
        return float(survdiff(time, status, group, strata=seeds)[1])
    except np.linalg.LinAlgError:  # no stratum with a variance (every pair tied): no test to make
        return float("nan")


def speed_comparisons(runs: pd.DataFrame, history: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per pair of initializers (in the runs' order) of which at least one reached ``threshold`` in
    some run: the seeds they share, each one's mean steps over those seeds, the mean per-seed difference in
    steps, the ratio of the means, the exact permutation p, and the censored and first-interval counts."""
    first_passes = first_evaluations(history) if len(history) else {}
    times = times_to(runs, threshold, first_passes)
    columns = ["init_a", "init_b", "n_seeds", "steps_a", "steps_b", "difference", "ratio", "p", "logrank_p",
               "not_reached", "in_first_interval"]  # fmt: skip
    rows = []
    inits = list(dict.fromkeys(times.init))
    for a, b in itertools.combinations(inits, 2):
        mine, theirs = times[times.init == a].set_index("seed"), times[times.init == b].set_index("seed")
        if not (mine.reached.any() or theirs.reached.any()):
            continue
        seeds = sorted(set(mine.index) & set(theirs.index))
        if not seeds:
            continue
        x, y = mine.loc[seeds], theirs.loc[seeds]
        difference, p = paired_permutation(x.steps.tolist(), y.steps.tolist())
        rows.append({
            "init_a": a, "init_b": b, "n_seeds": len(seeds),
            "steps_a": float(x.steps.mean()), "steps_b": float(y.steps.mean()),
            "difference": difference, "ratio": float(x.steps.mean() / y.steps.mean()), "p": p,
            "logrank_p": stratified_logrank(x, y),
            "not_reached": int((~x.reached).sum() + (~y.reached).sum()),
            "in_first_interval": int(x.bounded.sum() + y.bounded.sum()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
