"""Per-run endpoints: the numbers the report compares across initializers, one row per complete run.

Final test accuracy is the one number free of selection (the test set is evaluated once, after training). The
others are where initializers actually differ, measured on the training loss or the validation split: how fast
the training loss falls (its mean over all steps, i.e. the area under the per-step curve divided by the steps;
its mean over the first epoch), the validation loss after the first ``val_every_n_steps`` steps, and the lowest
validation loss with the step it was reached at (where a validation-driven choice would have stopped).
Time to a threshold is right-censored and is not a column here: see :func:`times_to`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from initstudy.train.convergence import threshold_key


@dataclass(frozen=True)
class Endpoint:
    column: str
    label: str  # as the report prints it
    accuracy: bool  # an accuracy: equivalence is tested at the margin, differences printed in pp
    digits: int = 4


def endpoints(split: str, first_eval_step: int | None) -> list[Endpoint]:
    """The compared endpoints, final test accuracy first; ``split``: the per-step evaluation split."""
    out = [
        Endpoint("test/acc", "test accuracy (once, after training)", accuracy=True),
        Endpoint("train/loss_auc", "train loss, mean over all steps (AUC / steps)", accuracy=False),
        Endpoint("train/loss_epoch_1", "train loss, mean over epoch 1", accuracy=False),
    ]
    if first_eval_step:
        out.append(
            Endpoint(
                f"{split}/loss_at_{first_eval_step}",
                f"{'validation' if split == 'val' else split} loss after {first_eval_step} steps",
                accuracy=False,
            )
        )
    name = "validation" if split == "val" else split
    out += [
        Endpoint(f"{split}/loss_min", f"minimum {name} loss", accuracy=False),
        Endpoint(f"{split}/loss_min_step", f"step of the minimum {name} loss", accuracy=False, digits=0),
    ]
    return out


def run_endpoints(
    runs: pd.DataFrame, history: pd.DataFrame, split: str, first_eval_step: int | None
) -> pd.DataFrame:
    """One row per complete run: init, seed, and every endpoint of :func:`endpoints` (NaN where a run has
    none, e.g. a run that diverged before the first evaluation)."""
    # The two values read from the history, looked up by (run, epoch or step) from one index each.
    epoch_1 = history[(history.metric == "train/loss") & (history.epoch == 1)].set_index("run_dir").value
    at_step = history[(history.metric == f"{split}/loss_step") & (history.step == first_eval_step)]
    at_step = at_step.set_index("run_dir").value
    rows = []
    for row in runs[runs.status == "complete"].to_dict("records"):
        run_dir = row["run_dir"]
        values = {
            "init": row["init"],
            "seed": int(row["seed"]),
            "test/acc": float(row["test/acc"]),
            "train/loss_auc": _float(row.get("train/loss_auc")),
            "train/loss_epoch_1": _float(epoch_1.get(run_dir)),
            f"{split}/loss_min": _float(row.get(f"{split}/loss_min")),
            f"{split}/loss_min_step": _float(row.get(f"{split}/loss_min_step")),
        }
        if first_eval_step:
            values[f"{split}/loss_at_{first_eval_step}"] = _float(at_step.get(run_dir))
        rows.append(values)
    return pd.DataFrame(rows)


def _float(value: object) -> float:
    try:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def first_evaluations(history: pd.DataFrame) -> dict[str, float]:
    """Per run folder, the step of the first evaluation pass after step 0 (the smallest positive step of the
    ``<split>/acc_step`` series): the end of the first evaluation interval."""
    series = history[history.metric.astype(str).str.endswith("/acc_step") & (history.step > 0)]
    return {str(run): float(steps.min()) for run, steps in series.groupby("run_dir").step}


def times_to(
    runs: pd.DataFrame, threshold: float, first_passes: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Steps to ``threshold`` per complete run, right-censored: ``steps`` is the interpolated crossing when
    ``reached``, else the step the run stopped at (``steps_completed``; a diverged run never arrives, so it is
    censored at the planned horizon, not at the step it stopped).

    A crossing inside the first evaluation interval (after step 0, at or before the first pass after it,
    ``first_passes`` per run folder) is ``bounded``: the straight line from step 0's near-chance accuracy to the
    first pass puts any such crossing just below the first pass (~98 of 100 steps for 90 %), a number made by
    the evaluation grid, not by the run. Its ``steps`` is then the first pass's step, an upper bound: the run got
    there by that step, and nothing says how much earlier."""
    done = runs[runs.status == "complete"]
    key = f"steps_to_{threshold_key(threshold)}"
    horizon = planned_steps(done)
    first_passes = first_passes or {}
    rows = []
    for row in done.to_dict("records"):
        crossing = _float(row.get(key))
        diverged = row.get("diverged") is True or row.get("diverged") == 1
        stopped = horizon if diverged else _float(row.get("steps_completed"))
        reached = not math.isnan(crossing)
        first = first_passes.get(str(row.get("run_dir")), math.nan)
        bounded = reached and 0 < crossing <= first
        rows.append({"init": row["init"], "seed": int(row["seed"]),
                     "steps": (first if bounded else crossing) if reached else stopped,
                     "reached": reached, "bounded": bounded})  # fmt: skip
    return pd.DataFrame(rows, columns=["init", "seed", "steps", "reached", "bounded"])


def planned_steps(done: pd.DataFrame) -> float:
    """The training horizon in optimizer steps: the longest complete run (every run of a group plans the same
    number of steps; only a diverged run stops early)."""
    steps = pd.to_numeric(done.get("steps_completed", pd.Series(dtype=float)), errors="coerce")
    return float(steps.max()) if steps.notna().any() else math.nan
