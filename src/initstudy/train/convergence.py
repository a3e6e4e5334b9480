"""Time to a threshold, read from a step series of evaluations: the first crossing, interpolated.

Evaluations are made every few hundred optimizer steps; reporting the step of the first evaluation at or above a
threshold would round every run up to that grid (at one evaluation per epoch, every run of the seed notebook's
network "reaches 97% at 1,876 steps"). The crossing is interpolated linearly between the last evaluation below
the threshold and the first at or above it. A run that never reaches it has no time: it is right-censored at
its last step, which the caller knows (``steps_completed``), and is analysed as such (Kaplan-Meier), never
dropped or given the horizon as if it had arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

THRESHOLDS = (0.90, 0.95, 0.97, 0.98)


def first_crossing(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The step at which ``values`` (in step order) first reach ``threshold``, linearly interpolated between
    the evaluation before and the one at or above; None when no evaluation reaches it. NaN values (a diverged
    run's passes) never count as reaching it."""
    previous: tuple[float, float] | None = None
    for step, value in zip(steps, values, strict=True):
        if not math.isnan(value) and value >= threshold:
            if previous is None or math.isnan(previous[1]) or previous[1] >= value:
                return float(step)
            (step_0, value_0) = previous
            return float(step_0 + (threshold - value_0) / (value - value_0) * (step - step_0))
        previous = (step, value)
    return None


def threshold_key(threshold: float) -> str:
    """0.97 -> "97" (metrics.json's ``steps_to_97``)."""
    return f"{round(threshold * 100)}"
