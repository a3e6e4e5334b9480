"""What the eps and width reports (conf/experiment/epsilon.yaml, width.yaml) share: their runs as one row each,
with the cell, the optimizer arm and the width read from the run folder's level, whether the run failed to
train (the depth report's definition), and the step-0 gradient measures of its own probe (layer_stats.csv), so
that every covariate of the fits is the run's own, not a cell mean over other seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from initstudy.report.depth import FAILS_BELOW, failure_interval
from initstudy.report.load import parse_group
from initstudy.report.papers.claims import complete
from initstudy.report.papers.rules import mcnemar_p
from initstudy.runs.results import RunFileError

CELL, ARM, WIDTH = "depth_cell", "optimizer_arm", "model.width"
LAYER_STATS = "layer_stats.csv"
# Keras' Adam adds eps to the uncorrected sqrt(v): in torch.optim.Adam's terms eps / sqrt(1 - beta2^t), at step 1
# eps / sqrt(1 - 0.999) (initstudy.nn.keras_adam).
KERAS_STEP1_FACTOR = 1.0 / math.sqrt(1.0 - 0.999)


def arm_eps(arm: str) -> float:
    """The arm's eps in torch.optim.Adam's terms at step 1 (Keras' larger, see KERAS_STEP1_FACTOR); NaN for SGD."""
    if arm.startswith("sgd"):
        return math.nan
    value = float(arm.rsplit("eps", 1)[1])
    return value * KERAS_STEP1_FACTOR if arm.startswith("adam_keras") else value


def sgd_lr(arm: str) -> float:
    """An SGD arm's learning rate (``sgd_lr0.03`` -> 0.03); NaN for an Adam arm."""
    return float(arm.split("lr", 1)[1]) if arm.startswith("sgd_lr") else math.nan


def step0_gradients(run_dir: Path) -> dict[str, float]:
    """The run's own probe at step 0 (layer_stats.csv): the median over hidden layers of the weight gradients'
    std (the scale Adam's eps competes with) and the back-propagated gradient's std in the first hidden layer
    over the last (how much of the gradient reaches the first layer)."""
    path = Path(run_dir) / LAYER_STATS
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as error:
        raise RunFileError(
            f"{path} is unreadable ({error}): the sweep must probe layers (module.layer_stats_every_n_steps)"
        ) from None
    first = frame[frame.step == frame.step.min()]
    weight = first[first.statistic == "weight_grad_std"].sort_values("layer").value.astype(float)
    pre = first[first.statistic == "grad_pre_std"].sort_values("layer").value.astype(float).to_numpy()
    if weight.empty or len(pre) == 0:
        raise RunFileError(f"{path} has no step-0 weight_grad_std / grad_pre_std rows")
    return {
        "weight_grad": float(weight.median()),
        "grad_ratio": float(pre[0] / pre[-1]) if pre[-1] else math.nan,
    }


def gradient_track(runs: pd.DataFrame) -> pd.DataFrame:
    """Every probe of every run: cell, arm, width, seed, step, the median over hidden layers of the weight
    gradients' std (how the gradients move during training, not only at step 0)."""
    parts = []
    for row in runs.itertuples(index=False):
        frame = pd.read_csv(Path(row.run_dir) / LAYER_STATS)
        weight = frame[frame.statistic == "weight_grad_std"]
        per_step = weight.groupby("step").value.median().reset_index(name="weight_grad")
        parts.append(per_step.assign(cell=row.cell, arm=row.arm, width=row.width, seed=row.seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run_table(runs: pd.DataFrame, default_width: int) -> pd.DataFrame:
    """One row per complete run: cell, activation, depth, init, arm, width, seed, test and validation accuracy,
    failed (test accuracy below FAILS_BELOW or diverged), the arm's eps and SGD rate, and the step-0 gradients."""
    done = complete(runs).reset_index(drop=True)
    keys = [parse_group(g) for g in done.group]
    table = done.assign(
        cell=[k.get(CELL, "") for k in keys],
        arm=[k.get(ARM, "") for k in keys],
        width=[int(k.get(WIDTH, default_width)) for k in keys],
    )
    acc = table["test/acc"].astype(float)
    diverged = table.get("diverged", pd.Series(False, index=table.index)).fillna(False).astype(bool)
    table = table.assign(
        acc=acc, val_acc=table["val/acc"].astype(float), failed=(acc < FAILS_BELOW) | diverged,
        eps=[arm_eps(a) for a in table.arm], lr=[sgd_lr(a) for a in table.arm],
        depth=table.depth.astype(int), seed=table.seed.astype(int),
    )  # fmt: skip
    measures = pd.DataFrame([step0_gradients(Path(d)) for d in table.run_dir], index=table.index)
    columns = ["cell", "activation", "depth", "init", "arm", "width", "seed", "acc", "val_acc", "failed", "eps",
               "lr", "weight_grad", "grad_ratio", "run_dir"]  # fmt: skip
    return (
        pd.concat([table, measures], axis=1)[columns]
        .sort_values(["cell", "arm", "width", "seed"])
        .reset_index(drop=True)
    )


def chosen_sgd(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per ``by`` group (a cell, a cell and width), the SGD rate with the highest mean validation accuracy over
    its seeds (the test set never steers the choice; a tie goes to the smaller rate): one row per group and
    rate, with the mean validation accuracy and whether it was chosen."""
    sgd = table[table.arm.str.startswith("sgd")]
    means = sgd.groupby([*by, "lr"], sort=True).val_acc.mean().reset_index(name="val_acc_mean")
    best = means.sort_values([*by, "val_acc_mean", "lr"], ascending=[True] * len(by) + [False, True])
    chosen = best.groupby(by, sort=False).head(1).assign(chosen=True)[[*by, "lr", "chosen"]]
    return means.merge(chosen, on=[*by, "lr"], how="left").fillna({"chosen": False})


def with_sgd_arm(table: pd.DataFrame, choice: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``table`` with each group's chosen SGD rate renamed to the arm ``sgd_chosen`` and the others dropped."""
    picked = choice[choice.chosen.astype(bool)][[*by, "lr"]].assign(keep=True)
    sgd = table[table.arm.str.startswith("sgd")].merge(picked, on=[*by, "lr"], how="inner")
    sgd = sgd[sgd.keep].drop(columns="keep").assign(arm="sgd_chosen")
    return pd.concat([table[~table.arm.str.startswith("sgd")], sgd], ignore_index=True)


def arm_summary(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per ``by`` group: runs, the seeds listed, failures with their 95% Clopper-Pearson interval, mean test
    accuracy, and the step-0 gradients' geometric means over the seeds."""
    rows = []
    for keys, group in table.groupby(by, sort=True):
        low, high = failure_interval(int(group.failed.sum()), len(group))
        rows.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True)),
                     "n_runs": len(group), "seeds": " ".join(str(s) for s in sorted(group.seed)),
                     "n_failed": int(group.failed.sum()), "fail_ci_low": low, "fail_ci_high": high,
                     "acc_mean": float(group.acc.mean()),
                     "weight_grad_gmean": geometric_mean(group.weight_grad),
                     "grad_ratio_gmean": geometric_mean(group.grad_ratio)})  # fmt: skip
    return pd.DataFrame(rows)


def scientific(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` as text in scientific notation (gradients span 30 orders of magnitude)."""
    return frame.assign(**{c: [f"{v:.2e}" for v in frame[c]] for c in columns})


def discordant_p(predicted: int, other: int) -> float:
    """Exact one-sided McNemar p for ``predicted`` discordant pairs going the predicted way out of ``predicted +
    other``; 1 when no pair is discordant (nothing points the predicted way)."""
    return mcnemar_p(predicted, other) if predicted + other else 1.0


def geometric_mean(values: pd.Series) -> float:
    positive = values.astype(float)
    positive = positive[positive > 0]
    return float(np.exp(np.log(positive).mean())) if len(positive) else math.nan


def paired(table: pd.DataFrame, arm: str, reference: str, by: list[str]) -> tuple[int, int, int]:
    """Runs of ``arm`` and ``reference`` paired on the same initial weights (``by`` + seed): the pairs where
    only the reference fails (b), only the arm fails (c), and the number of pairs."""
    left = table[table.arm == arm].set_index([*by, "seed"]).failed
    right = table[table.arm == reference].set_index([*by, "seed"]).failed
    both = pd.concat([left.rename("arm"), right.rename("reference")], axis=1, join="inner")
    only_reference = int((both.reference & ~both.arm).sum())
    only_arm = int((both.arm & ~both.reference).sum())
    return only_reference, only_arm, len(both)


def paired_difference(only_reference: int, only_arm: int, pairs: int) -> tuple[float, float, float]:
    """The paired difference in failure rate (reference minus arm) with its 95% Wald interval for matched
    pairs; NaN without pairs."""
    if pairs == 0:
        return math.nan, math.nan, math.nan
    diff = (only_reference - only_arm) / pairs
    se = math.sqrt(max(only_reference + only_arm - (only_reference - only_arm) ** 2 / pairs, 0.0)) / pairs
    half = stats.norm.ppf(0.975) * se
    return diff, diff - half, diff + half
