"""Saxe, McClelland & Ganguli (2014), deep linear networks, side by side with ours
(conf/experiment/saxe2014.yaml): the time to reach a fixed training loss against depth, from random orthogonal
weights and from the scaled Gaussian N(0, 1/fan_in) of the same variance, each at the best learning rate of a
grid (the paper's protocol: the optimal rate per depth). The paper: orthogonal learning time is independent of
depth, Gaussian grows with it. Beside it, the reason (Pennington et al. 2017's dynamical isometry): the
singular values of the input-output Jacobian at initialization, all equal for orthogonal weights, spreading
with depth for Gaussian ones (the diagnose stage's jacobian.csv). Each verdict is decided by its rule in
conf/experiment/claims/saxe2014.yaml: a learning rate chosen on the outcome it then reports biases that
outcome low, so the rules read the time at a rate chosen on another seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from initstudy.core.style import colour_map
from initstudy.report.figures import save
from initstudy.report.load import SweepRuns
from initstudy.report.papers.claims import (
    AGREES,
    INCONCLUSIVE,
    PARTS,
    Claim,
    PaperReport,
    complete,
    with_config_values,
)
from initstudy.report.papers.rules import Rule, judged
from initstudy.report.papers.rules import load as load_rules
from initstudy.report.tables import markdown_table

ORTHOGONAL, GAUSSIAN = "orthogonal", "gaussian"
LOSS_TARGET = 0.5  # the fixed training loss (window mean of the logged training loss; chance is 2.303)
FLAT_WITHIN = (
    2.0  # "independent of depth": slowest / fastest depth within this factor (the claims file's rule)
)
GROWS_BY = 2.0  # "grows": the deepest takes at least this factor longer than the shallowest (the same)


def steps_to_target(sweep: SweepRuns, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the first logged step whose window-mean training loss is below LOSS_TARGET (inf: not within
    the budget, or the run diverged), with init, depth, lr and the budget in steps."""
    losses = sweep.history[sweep.history.metric == "train/loss_step"]
    rows = []
    for row in complete(runs).itertuples(index=False):
        curve = losses[losses.run_dir == row.run_dir].sort_values("step")
        below = curve[curve.value < LOSS_TARGET]
        flag = getattr(row, "diverged", False)
        diverged = bool(pd.notna(flag) and flag)  # NaN: the run did not say (older metrics.json): it did not
        reached = float(below.step.min()) if len(below) and not diverged else math.inf
        rows.append({"init": row.init, "depth": int(row.depth), "lr": float(row.lr), "seed": int(getattr(row, "seed", 0)),
                     "steps": reached, "budget": float(curve.step.max()) if len(curve) else math.nan,
                     "final_loss": float(curve.value.iloc[-1]) if len(curve) else math.nan, "diverged": diverged})  # fmt: skip
    return pd.DataFrame(rows)


def best_per_depth(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (init, depth): the fewest steps over the learning rates on the first seed, which rate gave them
    (chosen on that seed's outcome, so its time is biased low), and, where there are more seeds, the median
    time at that rate on the others (chosen and measured apart: the time the rules read)."""
    rows = []
    grid = sorted(per_run.lr.unique())
    per_run = per_run if "seed" in per_run.columns else per_run.assign(seed=0)
    for (init, depth), group in per_run.groupby(["init", "depth"]):
        first = group[group.seed == group.seed.min()]
        best = first.sort_values(["steps", "lr"]).iloc[0]
        reached = math.isfinite(best.steps)
        others = group[(group.seed != best.seed) & (group.lr == best.lr)].steps
        rows.append({"init": init, "depth": int(depth), "best_steps": float(best.steps),
                     "best_lr": float(best.lr) if reached else math.nan,
                     "best_lr_at_grid_edge": bool(reached and len(grid) > 1 and best.lr in (grid[0], grid[-1])),
                     "held_out_steps": float(others.median()) if reached and len(others) else math.nan,
                     "seeds": int(group.seed.nunique()), "budget": float(group.budget.max()),
                     **{f"steps_lr_{lr:g}": float(s) for lr, s in zip(first.lr, first.steps, strict=True)}})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["init", "depth"]).reset_index(drop=True)


def _steps_text(steps: float, budget: float) -> str:
    return f"{steps:.0f}" if math.isfinite(steps) else f"> {budget:.0f}"


def _ratio(steps: pd.Series) -> float:
    """Slowest over fastest (inf when some depth never gets there and another does)."""
    finite = steps[steps.map(math.isfinite)]
    if finite.empty:
        return math.nan
    return math.inf if len(finite) < len(steps) else float(finite.max() / finite.min())


def learning_time_claims(best: pd.DataFrame, rules: dict[str, Rule] | None = None) -> list[Claim]:
    """Orthogonal flat, Gaussian growing, each by its rule in conf/experiment/claims/saxe2014.yaml: the time
    at a rate chosen on another seed, inconclusive where a chosen rate sits at the grid's edge (the optimum
    may lie beyond it), scored beside the trivial rule "depth does not matter"."""
    rules = rules if rules is not None else load_rules("saxe2014")
    claims = []
    for init, rule in ((ORTHOGONAL, rules["orthogonal_flat"]), (GAUSSIAN, rules["gaussian_grows"])):
        part = best[best.init == init].sort_values("depth") if len(best) else best
        if part.empty:
            claims.append(judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no complete runs"))
            continue
        ours = ", ".join(f"depth {r.depth}: {_steps_text(r.best_steps, r.budget)}" + ("*" if r.best_lr_at_grid_edge else "")
                         for r in part.itertuples())  # fmt: skip
        edges = int(part.best_lr_at_grid_edge.sum())
        if edges:
            ours += " (*: the best rate is at the grid's edge, so the optimum may lie outside it)"
        seeds = int(part.seeds.min()) if "seeds" in part.columns else 1
        held_out = seeds >= 2 and part.held_out_steps.notna().any()
        steps = part.held_out_steps.fillna(math.inf) if held_out else part.best_steps
        ratio = _ratio(steps)
        if init == ORTHOGONAL:
            shape = bool(ratio <= FLAT_WITHIN)
        else:
            first, last = steps.iloc[0], steps.iloc[-1]
            shape = bool(math.isfinite(first) and (not math.isfinite(last) or last >= GROWS_BY * first))
        outcome = INCONCLUSIVE if edges else AGREES if shape else PARTS
        why = [f"{edges} of {len(part)} depths' best rate at the grid's edge"] if edges else []
        if not held_out:
            why.append("each time is the best of the rate grid on the run it is read from (biased low)")
        claims.append(judged(rule, ours=ours, seeds=seeds, outcome=outcome, why="; ".join(why),
                             seeds_note="one run per (depth, rate)" if seeds == 1 else "",
                             baseline=(f"slowest / fastest depth {ratio:.1f}x" if math.isfinite(ratio) else
                                       "a depth never gets there") +
                                      f", {'holds' if ratio <= FLAT_WITHIN else 'fails'}"))  # fmt: skip
    return claims


def jacobian_claim(
    diagnostics_dir: Path | None, rules: dict[str, Rule] | None = None
) -> tuple[list[Claim], pd.DataFrame]:
    """The input-output Jacobian's singular-value spread at step 0: orthogonal (an identity, not counted) and
    Gaussian (increasing from each depth to the next)."""
    rules = rules if rules is not None else load_rules("saxe2014")
    orthogonal, gaussian = rules["jacobian_orthogonal"], rules["jacobian_gaussian_grows"]
    path = None if diagnostics_dir is None else diagnostics_dir / "jacobian.csv"
    if path is None or not path.is_file():
        return [judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no diagnostics")
                for rule in (orthogonal, gaussian)], pd.DataFrame()  # fmt: skip
    frame = pd.read_csv(path)
    frame = frame[frame.init.isin([ORTHOGONAL, GAUSSIAN])].sort_values(["init", "depth"])
    claims = []
    for init, rule in ((ORTHOGONAL, orthogonal), (GAUSSIAN, gaussian)):
        part = frame[frame.init == init]
        if part.empty:
            claims.append(judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no diagnostics"))
            continue
        ours = ", ".join(f"depth {int(r.depth)}: {r.relative_spread:.3f}" for r in part.itertuples())
        spread = part.relative_spread.reset_index(drop=True)
        rises = bool(len(spread) > 1 and (spread.diff().dropna() > 0).all())
        seeds = int(part.seeds.min()) if "seeds" in part.columns else 1
        claims.append(judged(rule, ours=ours, seeds=seeds, outcome=AGREES if rises else PARTS,
                             seeds_note="one network per depth",
                             baseline=f"spread from {spread.min():.3f} to {spread.max():.3f} across depths"))  # fmt: skip
    return claims, frame


def figure(best: pd.DataFrame, jacobians: pd.DataFrame, path: Path) -> None:
    colours = colour_map([ORTHOGONAL, GAUSSIAN])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    ax = axes[0]
    for init, part in best.groupby("init"):
        part = part.sort_values("depth")
        reached = part[part.best_steps.map(math.isfinite)]
        censored = part[~part.best_steps.map(math.isfinite)]
        ax.plot(reached.depth, reached.best_steps, "o-", color=colours[init], label=init)
        if len(censored):
            ax.plot(censored.depth, censored.budget, "^", color=colours[init], markerfacecolor="none",
                    label=f"{init}: not within the budget")  # fmt: skip
    ax.set(xscale="log", xlabel="depth (hidden layers)", ylabel=f"steps to training loss < {LOSS_TARGET}",
           title="Learning time at the best learning rate per depth")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    for init, part in jacobians.groupby("init") if len(jacobians) else []:
        ax.plot(part.depth, part.relative_spread, "o-", color=colours.get(init, "#999999"), label=init)
    ax.set(xscale="log", xlabel="depth (hidden layers)", ylabel="std / rms of singular values",
           title="Input-output Jacobian at initialization")  # fmt: skip
    ax.legend(fontsize=8)
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    runs = with_config_values(sweep.runs, ["optimizer.lr"]).rename(columns={"optimizer.lr": "lr"})
    per_run = steps_to_target(sweep, runs)
    best = best_per_depth(per_run) if len(per_run) else pd.DataFrame()
    jacobian, jacobians = jacobian_claim(diagnostics_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    drawn = {}
    if len(best):
        figure(best, jacobians, out_dir / "figures" / "learning_time_vs_depth.png")
        drawn = {
            "Steps to the loss target against depth, and the Jacobian's singular-value spread at init": "learning_time_vs_depth.png"
        }
    config = sweep.config
    model, trainer, data = (config.get(k, {}) for k in ("model", "trainer", "data"))
    lrs = sorted(float(x) for x in per_run.lr.unique()) if len(per_run) else []
    setup = [
        "Saxe, McClelland & Ganguli (2014), *Exact solutions to the nonlinear dynamics of learning in deep linear "
        "neural networks*, ICLR: learning time against depth for deep linear networks, orthogonal against "
        "scaled Gaussian initialization, reproduced on MNIST (`conf/experiment/saxe2014.yaml`, DVC stages "
        "`train_saxe2014` -> `diagnose_saxe2014` -> `report_paper@saxe2014`).",
        "",
        f"- **Ours:** linear MLPs (`model.activation=linear`) of width {model.get('width')} and depths "
        f"{sorted(int(d) for d in runs.depth.unique())}; random orthogonal weights against N(0, 1/fan_in), zero biases; "
        f"plain SGD at learning rates {lrs}, batch {data.get('batch_size')}, {data.get('train_size')} images for "
        f"{trainer.get('max_epochs')} epochs; learning time = the first step whose {trainer.get('log_every_n_steps')}-step "
        f"window of training loss is below {LOSS_TARGET}, at the best rate per depth (a diverged run does not count); "
        f"seeds {sorted(int(x) for x in runs.seed.unique())}, so each (depth, rate) is "
        f"{'one run and each best rate is chosen on the time it reports' if runs.seed.nunique() == 1 else 'several runs: the rate is chosen on the first seed and the time read on the others'}.",
        "- **Paper:** MNIST, depths up to 100, width 1,000, the learning rate optimized per depth, learning time "
        "to a fixed training error; pretrained and orthogonal initializations are flat in depth, Gaussian grows.",
        f"- **Why reduced:** width 128 and a {len(lrs)}-rate grid keep the {len(runs)} runs to a few CPU minutes.",
    ]  # fmt: skip
    section = ["## Per depth", "", f"Steps to training loss < {LOSS_TARGET} at each learning rate (inf: not within "
               "the budget or diverged) and at the best one.", ""]  # fmt: skip
    if len(best):
        section.append(markdown_table(best))
    metrics = {f"{r.init}.depth_{r.depth}": {"best_steps": r.best_steps, "best_lr": r.best_lr}
               for r in best.itertuples()} if len(best) else {}  # fmt: skip
    return PaperReport(title="Saxe et al. (2014), reproduced side by side", setup=setup,
                       claims=[*learning_time_claims(best), *jacobian], metrics=metrics,
                       sections=[section], figures=drawn,
                       claims_file="conf/experiment/claims/saxe2014.yaml")  # fmt: skip
