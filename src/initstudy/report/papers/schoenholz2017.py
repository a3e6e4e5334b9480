"""Schoenholz et al. (2017), *Deep Information Propagation*, side by side with ours
(conf/experiment/schoenholz2017.yaml): tanh networks over weight variance sigma_w^2 x depth at bias variance
sigma_b^2. The paper: a network trains when its depth is below about 6 xi_c, where xi_c is the mean-field depth
scale over which two inputs' correlation relaxes to its fixed point; xi_c diverges at the order/chaos boundary
chi_1 = 1, so the trainable depth peaks there. The predictions come from this study's own mean-field code
(``initstudy.nn.propagation.mean_field``), the measurements from the runs and the step-0 diagnostics (the
correlation map c_l).
"""

from __future__ import annotations

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
from initstudy.report.markdown import _table
from initstudy.report.papers.claims import (
    AGREES,
    PARTS,
    UNTESTED,
    Claim,
    PaperReport,
    complete,
    with_config_values,
)

TRAINS = 0.5  # final test accuracy at or above this: the cell trained (chance is 0.1)
DEPTH_SCALES = 6.0  # the paper: trainable up to about 6 xi_c
PAPER_CRITICAL_SIGMA_W2 = 1.76  # chi_1 = 1 for tanh at sigma_b^2 = 0.05, read off the paper's phase diagram
CRITICAL_TOLERANCE = 0.05
MATCH_SHARE = 0.85  # the bound "agrees" when it classifies at least this share of cells as measured


def critical_sigma_w2(activation: str, sigma_b2: float) -> float:
    """sigma_w^2 where chi_1 = 1 (the order/chaos boundary), by root finding on the mean-field chi_1; NaN when
    chi_1 does not cross 1 for sigma_w^2 in [0.5, 8] (an activation without such a boundary there)."""
    try:
        return float(brentq(lambda s: mean_field(activation, s, sigma_b2).chi_1 - 1.0, 0.5, 8.0, xtol=1e-6))
    except ValueError:  # brentq: no sign change over the bracket
        return math.nan


def cells(runs: pd.DataFrame, activation: str, sigma_b2: float) -> pd.DataFrame:
    """One row per (sigma_w^2, depth): mean test accuracy over seeds, xi_c, chi_1, predicted and measured
    trainability."""
    rows = []
    for (scale, depth), group in complete(runs).groupby(["init.scale", "depth"]):
        field = mean_field(activation, float(scale), sigma_b2)
        acc = float(group["test/acc"].astype(float).mean())
        bound = DEPTH_SCALES * field.xi_c
        rows.append({"sigma_w2": float(scale), "depth": int(depth), "test_acc": acc, "chi_1": field.chi_1,
                     "xi_c": field.xi_c, "bound_6_xi_c": bound, "predicted_trainable": bool(depth <= bound),
                     "trained": bool(acc >= TRAINS)})  # fmt: skip
    return pd.DataFrame(rows)


def correlation_claim(diagnostics_dir: Path | None, activation: str, sigma_b2: float) -> list[Claim]:
    """The correlation map at the deepest layer: c_l -> 1 in the ordered phase, to c* < 1 in the chaotic one,
    measured at step 0 (the diagnose stage: cosine similarity of pairs of images' pre-activations) beside the
    mean-field recursion for the same depth. The verdict is the paper's qualitative claim: every ordered
    network whose depth is past 3 xi_c ends above 0.99, every chaotic one below 0.95; how far measured and
    predicted sit apart is given beside it (a finite width adds O(1/sqrt(width)) fluctuations)."""
    path = None if diagnostics_dir is None else diagnostics_dir / "diagnostics.csv"
    name = "Correlation map c_l at step 0, deepest layer"
    paper = "ordered phase (chi_1 < 1): c_l -> 1; chaotic (chi_1 > 1): c_l -> c* < 1"
    if path is None or not path.is_file():
        return [Claim(name, paper, "–", UNTESTED, "no diagnostics")]
    frame = pd.read_csv(path)
    corr = frame[frame.statistic == "correlation"]
    if corr.empty:
        return [Claim(name, paper, "–", UNTESTED, "no correlation rows in the diagnostics")]
    depth = int(corr.depth.max())
    last = corr[(corr.depth == depth) & (corr.layer == corr[corr.depth == depth].layer.max())]
    rows, ok = [], True
    for _, row in last.iterrows():
        found = re.search(r"scale=([0-9.eE+-]+)", str(row["init"]))
        if found is None:
            continue
        field = mean_field(activation, float(found.group(1)), sigma_b2)
        rows.append((float(found.group(1)), row["mean"], row["predicted"]))
        if field.chi_1 < 1 and depth > 3 * field.xi_c:
            ok &= bool(row["mean"] > 0.99)
        elif field.chi_1 > 1:
            ok &= bool(row["mean"] < 0.95)
    if not rows:
        return [Claim(name, paper, "–", UNTESTED, "no network with a swept init.scale in the diagnostics")]
    rows.sort()
    described = "; ".join(f"σw²={s:g}: {m:.3f} (predicted {p:.3f})" for s, m, p in rows)
    gap = max(abs(m - p) for _, m, p in rows)
    return [Claim(f"{name} (depth {depth})", paper, f"{described}; largest gap to the prediction {gap:.2f}",
                  AGREES if ok else PARTS,
                  "" if ok else "an ordered network past 3 xi_c below 0.99, or a chaotic one above 0.95")]  # fmt: skip


def claims_of(table: pd.DataFrame, critical: float) -> list[Claim]:
    claims = [Claim("Order/chaos boundary chi_1 = 1, tanh, sigma_b^2 = 0.05", f"sigma_w^2 ~ {PAPER_CRITICAL_SIGMA_W2}",
                    f"sigma_w^2 = {critical:.3f} (our mean-field recursion)",
                    AGREES if abs(critical - PAPER_CRITICAL_SIGMA_W2) <= CRITICAL_TOLERANCE else PARTS)]  # fmt: skip
    if table.empty:
        return [*claims, Claim("Trainable iff depth <= 6 xi_c", "", "–", UNTESTED, "no complete runs")]
    matches = table.predicted_trainable == table.trained
    wrong = table[~matches]
    listed = ", ".join(f"(σw²={r.sigma_w2:g}, L={r.depth}: acc {r.test_acc:.2f}, 6ξc={r.bound_6_xi_c:.0f})"
                       for r in wrong.itertuples())  # fmt: skip
    share = float(matches.mean())
    claims.append(Claim(
        "Trainable iff depth <= 6 xi_c", "the 6 xi_c curve bounds the trainable region (MNIST, CIFAR-10)",
        f"{int(matches.sum())}/{len(table)} cells as predicted" + (f"; not: {listed}" if listed else ""),
        AGREES if share >= MATCH_SHARE else PARTS,
        "" if share >= MATCH_SHARE else
        "budget: ~300 SGD steps; the bound describes what trains given enough steps, and at short budgets the "
        "paper's own trainable band is narrower than 6 xi_c"))  # fmt: skip
    deepest = (
        table[table.trained].groupby("sigma_w2").depth.max()
        if table.trained.any()
        else pd.Series(dtype=float)
    )
    if len(deepest):
        best = deepest[deepest == deepest.max()].index
        near = any(abs(s - critical) <= 0.5 for s in best)
        claims.append(Claim(
            "The deepest trainable network sits at the boundary", "trainable depth peaks at chi_1 = 1",
            "deepest trained depth per sigma_w^2: " + ", ".join(f"{s:g}: {int(d)}" for s, d in deepest.items()),
            AGREES if near else PARTS, "" if near else "the peak is away from the boundary at this budget"))  # fmt: skip
    return claims


def figure(table: pd.DataFrame, activation: str, sigma_b2: float, critical: float, path: Path) -> None:
    """Test accuracy per (sigma_w^2, depth) cell, the 6 xi_c curve and the chi_1 = 1 line."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    points = ax.scatter(table.sigma_w2, table.depth, c=table.test_acc, cmap="viridis", vmin=0.0, vmax=1.0,
                        marker="s", s=260, edgecolors="white")  # fmt: skip
    fig.colorbar(points, ax=ax, label="test accuracy")
    grid = np.linspace(table.sigma_w2.min() * 0.9, table.sigma_w2.max() * 1.05, 200)
    bound = [DEPTH_SCALES * mean_field(activation, float(s), sigma_b2).xi_c for s in grid]
    ax.plot(grid, bound, color="#D55E00", label="6 ξ_c (mean field)")
    ax.axvline(
        critical, color="#444444", linestyle="--", linewidth=1, label=f"χ₁ = 1 (σ_w² = {critical:.2f})"
    )
    ax.set(xlabel="σ_w² (weight variance x fan-in)", ylabel="depth (hidden layers)",
           ylim=(0, table.depth.max() * 1.3), title=f"{activation}, σ_b² = {sigma_b2:g}: which cells train")  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    runs = with_config_values(sweep.runs, ["init.scale", "init.bias_std"])
    config = sweep.config
    model, trainer, optimizer, data = (config.get(k, {}) for k in ("model", "trainer", "optimizer", "data"))
    activation = str(model.get("activation", "tanh"))
    sigma_b2 = float(config.get("init", {}).get("bias_std") or 0.0) ** 2
    critical = critical_sigma_w2(activation, sigma_b2)
    table = cells(runs, activation, sigma_b2)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    drawn = {}
    if len(table):
        figure(table, activation, sigma_b2, critical, out_dir / "figures" / "phase_diagram.png")
        drawn = {
            "Trainability over (sigma_w^2, depth) with the 6 xi_c bound and the order/chaos boundary": "phase_diagram.png"
        }
    setup = [
        "Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), *Deep Information Propagation*, ICLR: the trainable "
        "depth of tanh networks against the mean-field depth scale xi_c, reproduced on MNIST "
        "(`conf/experiment/schoenholz2017.yaml`, DVC stages `train_schoenholz2017` -> `diagnose_schoenholz2017` -> "
        "`report_schoenholz2017`).",
        "",
        f"- **Ours:** {activation} MLPs of width {model.get('width')}, depths {sorted(int(d) for d in runs.depth.unique())}, "
        f"weights N(0, σ_w²/fan_in) for σ_w² in {sorted(float(s) for s in table.sigma_w2.unique())}, biases "
        f"N(0, σ_b² = {sigma_b2:.3g}); SGD lr {optimizer.get('lr')}, momentum {optimizer.get('momentum')}, batch "
        f"{data.get('batch_size')}, {data.get('train_size')} images for {trainer.get('max_epochs')} epochs; "
        f"a cell trains when its test accuracy reaches {TRAINS}.",
        "- **Paper:** width 300, depths up to 300, σ_w² from 1 to 4, SGD and RMSProp, training accuracy after up "
        "to thousands of steps.",
        "- **Why reduced:** a 300-layer network costs ~5x our deepest per step; the grid must fit a few CPU "
        "minutes. The mean-field predictions are for infinite width, so they apply to width 128 as to 300.",
    ]  # fmt: skip
    section = ["## Per cell", ""]
    if len(table):
        section.append(_table(table.sort_values(["sigma_w2", "depth"])))
    metrics = {"critical_sigma_w2": critical,
               "cells_as_predicted": int((table.predicted_trainable == table.trained).sum()) if len(table) else 0,
               "cells": len(table),
               "accuracy": {f"sigma_w2_{r.sigma_w2:g}.depth_{r.depth}": r.test_acc for r in table.itertuples()}}  # fmt: skip
    return PaperReport(title="Schoenholz et al. (2017), reproduced side by side", setup=setup,
                       claims=[*claims_of(table, critical), *correlation_claim(diagnostics_dir, activation, sigma_b2)],
                       metrics=metrics, sections=[section], figures=drawn)  # fmt: skip
