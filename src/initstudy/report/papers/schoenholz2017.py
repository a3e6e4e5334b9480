"""Schoenholz et al. (2017), *Deep Information Propagation*, side by side with ours
(conf/experiment/schoenholz2017.yaml): tanh networks over weight variance sigma_w^2 x depth at bias variance
sigma_b^2. The paper: a network trains when its depth is below about 6 xi_c, where xi_c is the mean-field depth
scale over which two inputs' correlation relaxes to its fixed point; xi_c diverges at the order/chaos boundary
chi_1 = 1, so the trainable depth peaks there. The predictions come from this study's own mean-field code
(``initstudy.nn.propagation.mean_field``), the measurements from the runs and the step-0 diagnostics (the
correlation map c_l). Three seeds per cell: a cell trains when a majority of its seeds do; the maximum
trainable depth per sigma_w^2, its fit to c xi_c and the claims read from it are ``max_depth``'s.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import brentq

from initstudy.nn.propagation import mean_field
from initstudy.report.figures import save
from initstudy.report.load import SweepRuns
from initstudy.report.papers import max_depth
from initstudy.report.papers.claims import (
    AGREES,
    PARTS,
    Claim,
    PaperReport,
    complete,
    with_config_values,
)
from initstudy.report.papers.max_depth import DEPTH_SCALES, TRAINS, majority
from initstudy.report.papers.rules import Rule, claims_path, judged, mcnemar_p, stated
from initstudy.report.papers.rules import load as load_rules
from initstudy.report.tables import markdown_table

PAPER_DEPTH = 300  # the paper's deepest network
CRITICAL_TOLERANCE = 0.05  # our chi_1 = 1 root against the paper's (an identity check, not a verdict)
PAPER = "schoenholz2017"
BOUND = "trainable_6_xi_c"  # its rule's value: the exact McNemar test's level (the claims file sets it)
MAX_DEPTH = "max_depth_6_xi_c"  # its rule's value: the paper's constant, 6 (max_depth.constant_claim)


def mcnemar_level(rules: dict[str, Rule]) -> float:
    """The level of the exact McNemar test behind the 6 xi_c verdict: the value of the rule
    ``trainable_6_xi_c`` (conf/experiment/claims/schoenholz2017.yaml), a number in (0, 1) its words state."""
    return stated(rules[BOUND], claims_path(PAPER), below=1)


def critical_sigma_w2(activation: str, sigma_b2: float) -> float:
    """sigma_w^2 where chi_1 = 1 (the order/chaos boundary), by root finding on the mean-field chi_1; NaN when
    chi_1 does not cross 1 for sigma_w^2 in [0.5, 8] (an activation without such a boundary there)."""
    try:
        return float(brentq(lambda s: mean_field(activation, s, sigma_b2).chi_1 - 1.0, 0.5, 8.0, xtol=1e-6))
    except ValueError:  # brentq: no sign change over the bracket
        return math.nan


def cells(runs: pd.DataFrame, activation: str, sigma_b2: float) -> pd.DataFrame:
    """One row per (sigma_w^2, depth): mean test accuracy over seeds, how many seeds reach the threshold and
    that fraction, xi_c, chi_1, predicted and measured trainability (a majority of the seeds trained)."""
    rows = []
    for (scale, depth), group in complete(runs).groupby(["init.scale", "depth"]):
        field = mean_field(activation, float(scale), sigma_b2)
        accs = group["test/acc"].astype(float).to_numpy()
        passed = accs >= TRAINS
        bound = DEPTH_SCALES * field.xi_c
        rows.append({"sigma_w2": float(scale), "depth": int(depth), "n_seeds": len(group),
                     "test_acc": float(accs.mean()), "n_passed": int(passed.sum()),
                     "trained_fraction": float(passed.mean()), "chi_1": field.chi_1, "xi_c": field.xi_c,
                     "bound_6_xi_c": bound, "predicted_trainable": bool(depth <= bound),
                     "trained": bool(majority(passed))})  # fmt: skip
    return pd.DataFrame(rows)


def correlation_claim(diagnostics_dir: Path | None, activation: str, sigma_b2: float,
                      rules: dict[str, Rule] | None = None) -> list[Claim]:  # fmt: skip
    """The correlation map at the deepest layer: c_l -> 1 in the ordered phase, to c* < 1 in the chaotic one,
    measured at step 0 (the diagnose stage: cosine similarity of pairs of images' pre-activations) beside the
    mean-field recursion for the same depth. The verdict is the rule in the claims file (every ordered
    network past 3 xi_c above 0.99, every chaotic one below 0.95), scored against the trivial rule "no
    phase: every network ends above 0.99"; beside it, how far measured and predicted sit apart and where the
    measured values break the recursion's monotone fall in sigma_w^2 (a finite width adds O(1/sqrt(width))
    fluctuations, and each sigma_w^2 is one network)."""
    rule = (rules if rules is not None else load_rules(PAPER))["correlation_map"]
    path = None if diagnostics_dir is None else diagnostics_dir / "diagnostics.csv"
    if path is None or not path.is_file():
        return [judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no diagnostics")]
    frame = pd.read_csv(path)
    corr = frame[frame.statistic == "correlation"]
    if corr.empty:
        return [judged(rule, ours="–", seeds=0, outcome=None, baseline="–",
                       why="no correlation rows in the diagnostics")]  # fmt: skip
    depth = int(corr.depth.max())
    last = corr[(corr.depth == depth) & (corr.layer == corr[corr.depth == depth].layer.max())]
    rows, scored, right, trivial = [], 0, 0, 0
    for _, row in last.iterrows():
        found = re.search(r"scale=([0-9.eE+-]+)", str(row["init"]))
        if found is None:
            continue
        field = mean_field(activation, float(found.group(1)), sigma_b2)
        rows.append((float(found.group(1)), row["mean"], row["predicted"]))
        ordered = field.chi_1 < 1 and depth > 3 * field.xi_c
        if ordered or field.chi_1 > 1:
            scored += 1
            right += bool(row["mean"] > 0.99) if ordered else bool(row["mean"] < 0.95)
            trivial += bool(row["mean"] > 0.99)
    if not rows:
        return [judged(rule, ours="–", seeds=0, outcome=None, baseline="–",
                       why="no network with a swept init.scale in the diagnostics")]  # fmt: skip
    rows.sort()
    described = "; ".join(f"σw²={s:g}: {m:.3f} (predicted {p:.3f})" for s, m, p in rows)
    gap = max(abs(m - p) for _, m, p in rows)
    rises = [(a, b) for (a, ma, pa), (b, mb, pb) in itertools.pairwise(rows) if pb < pa and mb > ma]
    breaks = ("; measured not monotone where the recursion falls: "
              + ", ".join(f"σw²={a:g} -> {b:g}" for a, b in rises)) if rises else ""  # fmt: skip
    seeds = int(last["seeds"].min()) if "seeds" in last.columns else 1
    ok = right == scored
    return [judged(rule, ours=f"{described}; largest gap to the prediction {gap:.2f}{breaks}", seeds=seeds,
                   outcome=AGREES if ok else PARTS,
                   baseline=f"{trivial}/{scored} networks right, the prediction {right}/{scored}",
                   seeds_note="one network per sigma_w^2",
                   why="" if ok else "an ordered network past 3 xi_c below 0.99, or a chaotic one above 0.95")]  # fmt: skip


def claims_of(table: pd.DataFrame, critical: float, rules: dict[str, Rule] | None = None) -> list[Claim]:
    """The boundary (an identity, not counted), the 6 xi_c bound against the trivial rule "every cell trains"
    (an exact McNemar test over the cells where the two disagree), the maximum trainable depth against 6 xi_c
    and its peak against the boundary (``max_depth``), each by its rule in
    conf/experiment/claims/schoenholz2017.yaml."""
    rules = rules if rules is not None else load_rules(PAPER)
    level = mcnemar_level(rules)
    claims = [judged(rules["boundary"], ours=f"sigma_w^2 = {critical:.3f} (our mean-field recursion)", seeds=0,
                     outcome=AGREES if abs(critical - rules["boundary"].value) <= CRITICAL_TOLERANCE else PARTS,
                     baseline="–")]  # fmt: skip
    if table.empty:
        return [*claims, judged(rules[BOUND], ours="–", seeds=0, outcome=None, baseline="–",
                                why="no complete runs"),
                *(judged(rules[r], ours="–", seeds=0, outcome=None, baseline="–", why="no complete runs")
                  for r in (MAX_DEPTH, "deepest_at_boundary"))]  # fmt: skip
    seeds = int(table.n_seeds.min()) if "n_seeds" in table.columns else 1
    matches = table.predicted_trainable == table.trained
    trivial = table.trained  # "every cell trains" is right exactly where the cell trained
    only_bound, only_trivial = int((matches & ~trivial).sum()), int((~matches & trivial).sum())
    p_value = mcnemar_p(only_bound, only_trivial)
    wrong = table[~matches]
    listed = ", ".join(f"(σw²={r.sigma_w2:g}, L={r.depth}: {r.n_passed}/{r.n_seeds} seeds, 6ξc={r.bound_6_xi_c:.0f})"
                       for r in wrong.itertuples())  # fmt: skip
    beats = only_bound + only_trivial > 0 and p_value <= level
    claims.append(judged(
        rules[BOUND],
        ours=f"{int(matches.sum())}/{len(table)} cells as predicted" + (f"; not: {listed}" if listed else ""),
        seeds=seeds, outcome=AGREES if beats else PARTS, seeds_note="per cell",
        baseline=f"{int(trivial.sum())}/{len(table)} cells; the bound alone right in {only_bound}, the trivial rule "
                 f"alone in {only_trivial} " + (f"(exact one-sided McNemar p = {p_value:.3g})"
                                                if only_bound + only_trivial else "(no cell where they disagree)"),
        why="" if beats else "the bound does not classify the cells better than 'every cell trains'"))  # fmt: skip
    per_sigma = max_depth.table(table)
    fitted = max_depth.fit(table, per_sigma)
    claims.append(max_depth.constant_claim(rules[MAX_DEPTH], per_sigma, fitted))
    claims.append(max_depth.peak_claim(rules["deepest_at_boundary"], per_sigma, critical))
    return claims


def _runs_per_cell(table: pd.DataFrame) -> str:
    if table.empty:
        return "no"
    low, high = int(table.n_seeds.min()), int(table.n_seeds.max())
    return str(low) if low == high else f"{low}-{high}"


def figure(table: pd.DataFrame, activation: str, sigma_b2: float, critical: float, path: Path) -> None:
    """Mean test accuracy per (sigma_w^2, depth) cell labelled with the seeds that trained, the 6 xi_c curve and
    the chi_1 = 1 line, log depth."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    points = ax.scatter(table.sigma_w2, table.depth, c=table.test_acc, cmap="viridis", vmin=0.0, vmax=1.0,
                        marker="s", s=260, edgecolors="white")  # fmt: skip
    fig.colorbar(points, ax=ax, label="test accuracy, mean over seeds")
    grid = np.linspace(table.sigma_w2.min() * 0.9, table.sigma_w2.max() * 1.05, 200)
    bound = [DEPTH_SCALES * mean_field(activation, float(s), sigma_b2).xi_c for s in grid]
    ax.plot(grid, bound, color="#D55E00", label="6 ξ_c (mean field)")
    ax.axvline(
        critical, color="#444444", linestyle="--", linewidth=1, label=f"χ₁ = 1 (σ_w² = {critical:.2f})"
    )
    for row in table.itertuples():  # how many of the cell's seeds trained
        ax.annotate(f"{row.n_passed}/{row.n_seeds}", (row.sigma_w2, row.depth), ha="center", va="center",
                    fontsize=6, color="white" if row.test_acc < 0.6 else "black")  # fmt: skip
    ax.set(xlabel="σ_w² (weight variance x fan-in)", ylabel="depth (hidden layers)", yscale="log",
           ylim=(table.depth.min() / 1.6, table.depth.max() * 4), title=f"{activation}, σ_b² = {sigma_b2:g}: which cells train")  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    rules = load_rules(PAPER)
    mcnemar_level(rules)  # a claims file without a usable level is refused before the mean field is solved
    stated(rules[MAX_DEPTH], claims_path(PAPER))  # and one without the paper's constant
    runs = with_config_values(sweep.runs, ["init.scale", "init.bias_std"])
    config = sweep.config
    model, trainer, optimizer, data = (config.get(k, {}) for k in ("model", "trainer", "optimizer", "data"))
    activation = str(model.get("activation", "tanh"))
    sigma_b2 = float(config.get("init", {}).get("bias_std") or 0.0) ** 2
    critical = critical_sigma_w2(activation, sigma_b2)
    table = cells(runs, activation, sigma_b2)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    drawn, per_sigma = {}, max_depth.table(table)
    fitted = max_depth.fit(table, per_sigma)
    if len(table):
        figure(table, activation, sigma_b2, critical, out_dir / "figures" / "phase_diagram.png")
        max_depth.figure(per_sigma, fitted, lambda s: mean_field(activation, s, sigma_b2).xi_c, critical,
                         out_dir / "figures" / "max_depth.png")  # fmt: skip
        drawn = {
            "Trainability over (sigma_w^2, depth) with the 6 xi_c bound and the order/chaos boundary "
            "(colour: mean test accuracy over seeds; label: seeds that trained)": "phase_diagram.png",
            "Maximum trainable depth per sigma_w^2 (triangles up: lower bounds), 6 xi_c and the fitted c xi_c "
            "with its interval (seeds and grid)": "max_depth.png",
        }
    deepest = max((int(d) for d in runs.depth.unique()), default=PAPER_DEPTH)
    setup = [
        "Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), *Deep Information Propagation*, ICLR: the trainable "
        "depth of tanh networks against the mean-field depth scale xi_c, reproduced on MNIST "
        "(`conf/experiment/schoenholz2017.yaml`, DVC stages `train_schoenholz2017` -> `diagnose_schoenholz2017` -> "
        "`report_paper@schoenholz2017`).",
        "",
        f"- **Ours:** {activation} MLPs of width {model.get('width')}, depths {sorted(int(d) for d in runs.depth.unique())}, "
        f"weights N(0, σ_w²/fan_in) for σ_w² in {sorted(float(s) for s in table.sigma_w2.unique())}, biases "
        f"N(0, σ_b² = {sigma_b2:.3g}); SGD lr {optimizer.get('lr')}, momentum {optimizer.get('momentum')}, batch "
        f"{data.get('batch_size')}, {data.get('train_size')} images for {trainer.get('max_epochs')} epochs; "
        f"a run trains when its test accuracy reaches {TRAINS} and a cell when a majority of its seeds do; seeds "
        f"{sorted(int(s) for s in runs.seed.unique())}: {_runs_per_cell(table)} run(s) per cell; the verdicts "
        "count cells, and the maximum trainable depth's interval resamples the seeds within each cell.",
        "- **Paper:** width 300, depths up to 300, σ_w² from 1 to 4, SGD and RMSProp, training accuracy after up "
        "to thousands of steps.",
        f"- **Why reduced:** a 300-layer network costs {PAPER_DEPTH / deepest:.2g}x our deepest per step, and the "
        f"{len(runs)} runs must fit the 2-core CPU run. The mean-field predictions are for infinite width, so "
        f"they apply to width {model.get('width')} as to 300.",
    ]  # fmt: skip
    section = ["## Per cell", ""]
    if len(table):
        section.append(markdown_table(table.sort_values(["sigma_w2", "depth"])))
    depth_section = ["## Maximum trainable depth", "", *max_depth.summary(per_sigma, fitted)]
    if len(per_sigma):
        depth_section += ["", markdown_table(per_sigma)]
    metrics = {"critical_sigma_w2": critical,
               "cells_as_predicted": int((table.predicted_trainable == table.trained).sum()) if len(table) else 0,
               "cells": len(table),
               "accuracy": {f"sigma_w2_{r.sigma_w2:g}.depth_{r.depth}": r.test_acc for r in table.itertuples()},
               "seeds_passed": {f"sigma_w2_{r.sigma_w2:g}.depth_{r.depth}": r.n_passed for r in table.itertuples()},
               "seeds": {f"sigma_w2_{r.sigma_w2:g}.depth_{r.depth}": r.n_seeds for r in table.itertuples()},
               "max_depth": max_depth.metrics(per_sigma, fitted)}  # fmt: skip
    return PaperReport(title="Schoenholz et al. (2017), reproduced side by side", setup=setup,
                       claims=[*claims_of(table, critical, rules),
                               *correlation_claim(diagnostics_dir, activation, sigma_b2, rules)],
                       metrics=metrics, sections=[section, depth_section], figures=drawn,
                       tables={"max_depth.csv": per_sigma.assign(fit_c_xi_c=fitted.c * per_sigma.xi_c)
                               if len(per_sigma) else per_sigma},
                       claims_file="conf/experiment/claims/schoenholz2017.yaml")  # fmt: skip
