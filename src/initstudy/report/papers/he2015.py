"""He et al. (2015), Figures 2 and 3, side by side with ours (conf/experiment/he2015.yaml): deep ReLU networks
trained from "Xavier" N(0, 1/n) against He's N(0, 2/n). The paper: at 22 layers (Figure 2) both converge, He's
sooner, and both end at about the same error; at 30 layers (Figure 3) Xavier stalls while He's converges.
Ours: MLPs on MNIST instead of their convolutional networks on ImageNet, the training loss every 10 steps
instead of the top-1 error per epoch. Each verdict is decided by its rule in conf/experiment/claims/he2015.yaml.
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
from initstudy.report.papers.claims import (
    AGREES,
    PARTS,
    Claim,
    PaperReport,
    complete,
    mean_sd,
    with_config_values,
)
from initstudy.report.papers.rules import (
    Rule,
    against_margin,
    judged,
    sign_test_p,
    welch_interval,
)
from initstudy.report.papers.rules import (
    load as load_rules,
)
from initstudy.report.tables import markdown_table

XAVIER, HE = 1.0, 2.0  # init.scale: Var(w) = scale / fan_in
NAMES = {XAVIER: "Xavier N(0, 1/n)", HE: "He N(0, 2/n)"}
COLOURS = {XAVIER: "#0072B2", HE: "#D55E00"}
# "Starts learning": the windowed training loss first below this (chance is ln 10 = 2.303); "stalls": never.
LEARNING = 2.0
END_MARGIN_PP = 2.0  # "about the same final error": the rule's margin (conf/experiment/claims/he2015.yaml)


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


def per_seed(runs: pd.DataFrame, losses: pd.DataFrame) -> pd.DataFrame:
    """One row per complete run: its depth, scale and seed, the steps until its windowed training loss first
    drops below LEARNING (inf if it never does), its final windowed training loss and its test error (%)."""
    rows = []
    for row in complete(runs).to_dict("records"):
        depth, scale, seed = row["depth"], row["init.scale"], row["seed"]
        curve = losses[(losses.depth == depth) & (losses["init.scale"] == scale) & (losses.seed == seed)]
        curve = curve.sort_values("step")
        rows.append({"depth": int(depth), "scale": float(scale), "seed": int(seed),
                     "steps_to_loss_2": first_below(curve, LEARNING),
                     "final_train_loss": float(curve.value.iloc[-1]) if len(curve) else math.nan,
                     "test_error_pct": 100.0 * (1.0 - float(row["test/acc"]))})  # fmt: skip
    return pd.DataFrame(rows, columns=["depth", "scale", "seed", "steps_to_loss_2", "final_train_loss",
                                       "test_error_pct"])  # fmt: skip


def cells(seeds: pd.DataFrame) -> pd.DataFrame:
    """One row per (depth, scale): steps until the loss first drops below LEARNING (median over seeds, inf if a
    seed never does), how many seeds get there, the final windowed training loss and the test error."""
    rows = []
    for (depth, scale), group in seeds.groupby(["depth", "scale"]):
        error = group.test_error_pct
        rows.append({"depth": int(depth), "scale": float(scale), "n_runs": len(group),
                     "steps_to_loss_2_median": float(group.steps_to_loss_2.median()),
                     "seeds_reaching_loss_2": int(group.steps_to_loss_2.map(math.isfinite).sum()),
                     "final_train_loss_mean": float(group.final_train_loss.mean()),
                     "test_error_pct_mean": float(error.mean()),
                     "test_error_pct_std": float(error.std(ddof=1)) if len(error) > 1 else math.nan})  # fmt: skip
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


def paired(seeds: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Xavier's and He's runs at ``depth`` side by side, one row per seed both have (columns suffixed
    _xavier and _he)."""
    at = seeds[seeds.depth == depth]
    xavier, he = at[at.scale == XAVIER], at[at.scale == HE]
    return xavier.merge(he, on="seed", suffixes=("_xavier", "_he"))


def claims_of(seeds: pd.DataFrame, rules: dict[str, Rule] | None = None) -> list[Claim]:
    """The three claims of Figures 2 and 3, each decided by its rule in conf/experiment/claims/he2015.yaml."""
    rules = rules if rules is not None else load_rules("he2015")
    table = cells(seeds) if len(seeds) else pd.DataFrame(columns=["depth", "scale"])
    claims = []
    for depth, ids in ((22, ("fig2_22_layers_sooner", "fig2_22_layers_end")), (30, ("fig3_30_layers",))):
        xavier, he = _cell(table, depth, XAVIER), _cell(table, depth, HE)
        pairs = paired(seeds, depth) if len(seeds) else pd.DataFrame()
        if xavier is None or he is None or pairs.empty:
            for rule_id in ids:
                claims.append(judged(rules[rule_id], ours="–", seeds=0, outcome=None, baseline="–",
                                     why=f"no complete runs of both inits at depth {depth}"))  # fmt: skip
            continue
        both = f"{_describe(xavier)}; {_describe(he)}"
        n = len(pairs)
        he_reaches = pairs.steps_to_loss_2_he.map(math.isfinite)
        xavier_reaches = pairs.steps_to_loss_2_xavier.map(math.isfinite)
        if depth == 22:
            sooner = he_reaches & xavier_reaches & (pairs.steps_to_loss_2_he < pairs.steps_to_loss_2_xavier)
            outcome = AGREES if sooner.all() else PARTS
            claims.append(judged(rules["fig2_22_layers_sooner"], ours=both, seeds=n, outcome=outcome,
                                 baseline=f"{sign_test_p(n, n):.3g} with {n} seed(s) "
                                          f"(ours: He sooner in {int(sooner.sum())}/{n})"))  # fmt: skip
            gap = pairs.test_error_pct_xavier - pairs.test_error_pct_he
            low, high = welch_interval(pairs.test_error_pct_xavier, pairs.test_error_pct_he)
            interval = "" if math.isnan(low) else f", 95 % Welch interval [{low:+.1f}, {high:+.1f}] pp"
            ours = (f"Xavier ends at {xavier.test_error_pct_mean:.1f} % test error, He's at "
                    f"{he.test_error_pct_mean:.1f} %: Xavier minus He {gap.mean():+.1f} pp{interval}")  # fmt: skip
            claims.append(judged(rules["fig2_22_layers_end"], ours=ours, seeds=n,
                                 outcome=against_margin((low, high), 0.0, END_MARGIN_PP),
                                 baseline=f"0 pp against ours {gap.mean():+.1f} pp",
                                 why="" if abs(gap.mean()) <= END_MARGIN_PP else
                                 "the paper's two end about equal; ours do not"))  # fmt: skip
        else:
            split = he_reaches & ~xavier_reaches
            runs_right = int(he_reaches.sum() + (~xavier_reaches).sum())
            trivial_right = int(he_reaches.sum() + xavier_reaches.sum())
            claims.append(judged(rules["fig3_30_layers"], ours=both, seeds=n,
                                 outcome=AGREES if split.all() else PARTS,
                                 baseline=f"{trivial_right}/{2 * n} runs right, the paper's prediction "
                                          f"{runs_right}/{2 * n}"))  # fmt: skip
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
        "He et al. (2015) Figs. 2-3 on MNIST MLPs: training loss, each seed a line (dotted: chance)",
        fontsize=9,
    )
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    runs = with_config_values(sweep.runs, ["init.scale"])
    losses = train_loss(sweep, runs)
    seeds_frame = per_seed(runs, losses)
    table = cells(seeds_frame) if len(seeds_frame) else pd.DataFrame()
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    drawn = {}
    if len(losses):
        figure(losses, out_dir / "figures" / "figures2_3_training_loss.png")
        drawn = {
            "Figures 2 (22 ReLU layers) and 3 (30 ReLU layers): training loss against steps": "figures2_3_training_loss.png"
        }
    config = sweep.config
    model, trainer, optimizer, data = (config.get(k, {}) for k in ("model", "trainer", "optimizer", "data"))
    seeds = sorted(int(s) for s in runs.seed.unique())
    setup = [
        "He, Zhang, Ren & Sun (2015), *Delving deep into rectifiers*, ICCV: Figures 2 and 3 (a 22- and a 30-layer "
        "ReLU network from the \"Xavier\" init against theirs), reproduced on MNIST (`conf/experiment/he2015.yaml`, "
        "DVC stages `train_he2015` -> `diagnose_he2015` -> `report_paper@he2015`).",
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
        section.append(markdown_table(table))
    return PaperReport(title="He et al. (2015), Figures 2 and 3, reproduced side by side", setup=setup,
                       claims=claims_of(seeds_frame), metrics=metrics, sections=[section], figures=drawn,
                       claims_file="conf/experiment/claims/he2015.yaml")  # fmt: skip
