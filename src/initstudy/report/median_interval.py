"""A confidence interval for the median time to a threshold whose coverage is known exactly.

With n runs, the interval between the r-th smallest and the r-th largest time covers the true median with
probability P(r <= B <= n - r), B ~ Binomial(n, 1/2) (the number of runs below the median), whatever the
distribution of the times: the order-statistic (sign-test) interval. Its coverage moves in discrete steps, and
with n = 5 runs even the widest interval, [min, max], covers only 1 - 2 * 0.5^5 = 93.75 %: no interval from 5
runs reaches 95 %. This module then says so, returning [min, max] with its actual coverage, rather than
labelling it 95 %. (statsmodels' Kaplan-Meier median interval returns the same [min, max] for 5 uncensored
runs and calls it 95 %.)

Runs that never reached the threshold are censored at their last step: their true times lie above it. The
lower bound is the r-th smallest observed time (event or censoring), which is at most the r-th smallest true
time; the upper bound is the r-th largest rank among the events alone, n + 1 - r of them, which is at least
the true order statistic, and open (NaN) when fewer runs got there. The interval therefore contains the
order-statistic interval of the true times: its coverage is exactly the binomial one when every censored run
stopped after the events that bound it (censoring at the horizon, as in this study), and at least that
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MedianInterval:
    low: float  # NaN when not estimable
    high: float  # NaN when open: the bound lies among the runs that never got there
    coverage: (
        float  # the probability that the interval covers the median (at least this under early censoring)
    )
    nominal: float  # the confidence asked for; coverage < nominal when n runs cannot give it

    @property
    def short_of_nominal(self) -> bool:
        """True when no order-statistic interval from these runs reaches the confidence asked for."""
        return self.coverage < self.nominal


def coverage(n: int, rank: int) -> float:
    """P(t_(rank) <= median <= t_(n + 1 - rank)) for n independent continuous times: P(rank <= B <= n - rank),
    B ~ Binomial(n, 1/2). For rank = 1 ([min, max]): 1 - 2 * 0.5^n."""
    if not 1 <= rank <= (n + 1) // 2:
        raise ValueError(f"rank must be in 1..{(n + 1) // 2} for n = {n}, not {rank}")
    return float(stats.binom.cdf(n - rank, n, 0.5) - stats.binom.cdf(rank - 1, n, 0.5))


def median_interval(times: Sequence[float], reached: Sequence[bool], confidence: float) -> MedianInterval:
    """The narrowest order-statistic interval whose coverage is at least ``confidence``; with too few runs for
    that, [min, max] and its (lower) coverage. See the module docstring for censoring."""
    time = np.asarray(times, dtype=float)
    status = np.asarray(reached, dtype=bool)
    n = len(time)
    events = np.sort(time[status])
    if len(events) == 0:
        return MedianInterval(math.nan, math.nan, math.nan, confidence)
    rank = 1
    while rank + 1 <= (n + 1) // 2 and coverage(n, rank + 1) >= confidence:
        rank += 1
    low = float(np.sort(time)[rank - 1])
    high = float(events[n - rank]) if n - rank < len(events) else math.nan
    return MedianInterval(low, high, coverage(n, rank), confidence)
