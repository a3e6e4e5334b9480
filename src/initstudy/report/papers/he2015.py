"""He et al. (2015), Figure 3, side by side with ours (conf/experiment/he2015.yaml): deep ReLU networks trained
from "Xavier" N(0, 1/n) against He's N(0, 2/n). The paper: at 22 layers both converge, He's sooner; at 30
layers Xavier stalls while He's converges. Ours: MLPs on MNIST instead of their convolutional networks on
ImageNet, the training loss every 10 steps instead of the top-1 error per epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from initstudy.report.figures import save
from initstudy.report.load import SweepRuns
from initstudy.report.markdown import _table
from initstudy.report.papers.claims import (
    AGREES,
    PARTS,
    UNTESTED,
    Claim,
    PaperReport,
    complete,
    error_percent,
    mean_sd,
    with_config_values,
)

XAVIER, HE = 1.0, 2.0  # init.scale: Var(w) = scale / fan_in
NAMES = {XAVIER: "Xavier N(0, 1/n)", HE: "He N(0, 2/n)"}
COLOURS = {XAVIER: "#0072B2", HE: "#D55E00"}
# "Starts learning": the windowed training loss first below this (chance is ln 10 = 2.303); "stalls": never.
LEARNING = 2.0
PAPER = {
    22: "both converge; He's starts reducing the error sooner",
    30: "Xavier stalls (no progress); He's converges",
}


def train_loss(sweep: SweepRuns, runs: pd.DataFrame) -> pd.DataFrame:
    """The training-loss series of every complete run (step, value) with its depth, scale and seed."""
    series = sweep.history[sweep.history.metric == "train/loss_step"]
    keys = runs[["run_dir", "depth", "init.scale", "seed"]]
    return series.merge(keys, on="run_dir", suffixes=("_history", ""))[
        ["depth", "init.scale", "seed", "step", "value"]
    ]


def first_below(curve: pd.DataFrame, level: float) -> float:
    below = curve[curve.value < level]
    return float(below.step.min()) if len(below) else math.inf


def cells(runs: pd.DataFrame, losses: pd.DataFrame) -> pd.DataFrame:
    """One row per (depth, scale): steps until the loss first drops below LEARNING (median over seeds, inf if a
    seed never does), the final windowed training loss and the test error."""
    rows = []
    for (depth, scale), group in complete(runs).groupby(["depth", "init.scale"]):
        starts, finals = [], []
        for seed in group.seed:
            curve = losses[(losses.depth == depth) & (losses["init.scale"] == scale) & (losses.seed == seed)]
            curve = curve.sort_values("step")
            starts.append(first_below(curve, LEARNING))
            finals.append(float(curve.value.iloc[-1]) if len(curve) else math.nan)
        mean, sd, n = error_percent(group["test/acc"])
        rows.append({"depth": int(depth), "scale": float(scale), "n_runs": n,
                     "steps_to_loss_2_median": float(pd.Series(starts).median()),
                     "seeds_reaching_loss_2": sum(math.isfinite(s) for s in starts),
                     "final_train_loss_mean": float(pd.Series(finals).mean()),
                     "test_error_pct_mean": mean, "test_error_pct_std": sd})  # fmt: skip
    return pd.DataFrame(rows)


def _cell(table: pd.DataFrame, depth: int, scale: float) -> pd.Series | None:
    match = table[(table.depth == depth) & (table.scale == scale)]
    return None if match.empty else match.iloc[0]


def _describe(row: pd.Series) -> str:
    start = row.steps_to_loss_2_median
    when = (
        f"loss < {LEARNING} after {start:.0f} steps" if math.isfinite(start) else f"loss never < {LEARNING}"
    )
    name = NAMES.get(row.scale, f"N(0, {row.scale:g}/n)")
    return (f"{name}: {when} ({int(row.seeds_reaching_loss_2)}/{int(row.n_runs)} seeds), final loss "
            f"{row.final_train_loss_mean:.3f}, test error {mean_sd(row.test_error_pct_mean, row.test_error_pct_std, int(row.n_runs))} %")  # fmt: skip


def claims_of(table: pd.DataFrame) -> list[Claim]:
    claims = []
    for depth, paper in PAPER.items():
        xavier, he = _cell(table, depth, XAVIER), _cell(table, depth, HE)
        name = f"Figure 3: {depth} ReLU layers"
        if xavier is None or he is None:
            claims.append(Claim(name, paper, "–", UNTESTED, f"no complete runs at depth {depth}"))
            continue
        he_learns = he.seeds_reaching_loss_2 == he.n_runs
        xavier_learns = xavier.seeds_reaching_loss_2 == xavier.n_runs
        xavier_stalls = xavier.seeds_reaching_loss_2 == 0
        if depth == 30:
            agrees = he_learns and xavier_stalls
        else:
            agrees = he_learns and xavier_learns and he.steps_to_loss_2_median < xavier.steps_to_loss_2_median
        why = (
            ""
            if agrees
            else (
                "within our budget"
                + ("" if xavier_learns or depth == 30 else ": Xavier had not started by the last step")
            )
        )
        claims.append(
            Claim(name, paper, f"{_describe(xavier)}; {_describe(he)}", AGREES if agrees else PARTS, why)
        )
    return claims


def figure(losses: pd.DataFrame, path: Path) -> None:
    depths = sorted(losses.depth.unique())
    fig, axes = plt.subplots(1, max(1, len(depths)), figsize=(5.2 * max(1, len(depths)), 3.8), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=False):
        for (scale, seed), curve in losses[losses.depth == depth].groupby(["init.scale", "seed"]):
            curve = curve.sort_values("step")
            ax.plot(curve.step, curve.value, color=COLOURS.get(scale, "#999999"), alpha=0.85,
                    label=f"{NAMES.get(scale, scale)}" if seed == losses.seed.min() else None)  # fmt: skip
        ax.axhline(math.log(10), color="#999999", linestyle=":", linewidth=1)
        ax.set(title=f"{depth} ReLU layers", xlabel="optimizer step", ylabel="training loss (window mean)")
        ax.legend(fontsize=8)
    fig.suptitle(
        "He et al. (2015) Fig. 3 on MNIST MLPs: training loss, each seed a line (dotted: chance)", fontsize=9
    )
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    runs = with_config_values(sweep.runs, ["init.scale"])
    losses = train_loss(sweep, runs)
    table = cells(runs, losses)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    drawn = {}
    if len(losses):
        figure(losses, out_dir / "figures" / "figure3_training_loss.png")
        drawn = {"Figure 3: training loss against steps, 22 and 30 ReLU layers": "figure3_training_loss.png"}
    config = sweep.config
    model, trainer, optimizer, data = (config.get(k, {}) for k in ("model", "trainer", "optimizer", "data"))
    seeds = sorted(int(s) for s in runs.seed.unique())
    setup = [
        "He, Zhang, Ren & Sun (2015), *Delving deep into rectifiers*, ICCV: Figure 3 (a 22- and a 30-layer ReLU "
        "network from the \"Xavier\" init against theirs), reproduced on MNIST (`conf/experiment/he2015.yaml`, "
        "DVC stages `train_he2015` -> `diagnose_he2015` -> `report_he2015`).",
        "",
        f"- **Ours:** MLPs of {sorted(int(d) for d in runs.depth.unique())} hidden ReLU layers x {model.get('width')} "
        f"units, weights N(0, scale / fan_in) with scale 1 (Xavier as the paper uses it) or 2 (theirs), zero biases; "
        f"SGD lr {optimizer.get('lr')}, momentum {optimizer.get('momentum')}, batch {data.get('batch_size')}, "
        f"{data.get('train_size')} training images for {trainer.get('max_epochs')} epochs; the training loss is "
        f"the mean over each window of {trainer.get('log_every_n_steps')} steps; seeds {seeds}.",
        "- **Paper:** convolutional networks on ImageNet (Table 4's model B-style stacks of 3x3 conv layers), SGD "
        "with momentum 0.9, top-1 error per epoch.",
        "- **Where ours differs by design:** an MLP has no convolutions, pooling or ImageNet's scale; what carries "
        "over is the variance argument: with ReLU, N(0, 1/n) halves the signal's second moment per layer "
        "(2^-30 after 30 layers), N(0, 2/n) keeps it.",
    ]  # fmt: skip
    metrics = {f"depth_{row.depth}.scale_{row.scale:g}": {k: row[k] for k in table.columns if k not in ("depth", "scale")}
               for _, row in table.iterrows()}  # fmt: skip
    section = [
        "## Per cell",
        "",
        "Steps until the windowed training loss first drops below "
        f"{LEARNING} (chance: 2.303), median over seeds; inf: not within the budget.",
        "",
    ]
    if len(table):
        section.append(_table(table))
    return PaperReport(title="He et al. (2015), Figure 3, reproduced side by side", setup=setup,
                       claims=claims_of(table), metrics=metrics, sections=[section], figures=drawn)  # fmt: skip
