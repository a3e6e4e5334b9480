"""Matplotlib figures; every initializer keeps one colour across all of them (and across reports)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or DVC
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from initstudy.config import group_options
from initstudy.report.stats import SEED_NOTEBOOK, t_interval

DPI = 110


def palette(inits: list[str]) -> dict[str, tuple]:
    """A fixed colour per initializer name: its position among all known options (conf/init/)."""
    known = group_options("init")
    names = known + [name for name in inits if name not in known]
    cmap = plt.get_cmap("tab20")
    return {name: cmap(index % 20) for index, name in enumerate(names)}


def _mean_band(curves: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for epoch, group in curves.groupby("epoch"):
        low, high = t_interval(group.value)
        mean = group.value.mean()
        rows.append(
            {
                "epoch": epoch,
                "mean": mean,
                "low": mean if math.isnan(low) else low,
                "high": mean if math.isnan(high) else high,
            }
        )
    return pd.DataFrame(rows)


def learning_curves(history: pd.DataFrame, inits: list[str], split: str, path: Path) -> None:
    """Test error (log) and train loss (log) per epoch: mean over seeds with a 95% t-interval band."""
    colours = palette(inits)
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for init in inits:
        acc = history[(history.init == init) & (history.metric == f"{split}/acc")]
        if len(acc):
            band = _mean_band(acc.assign(value=1 - acc.value))
            ax_err.plot(band.epoch, band["mean"], marker="o", ms=3, color=colours[init], label=init)
            ax_err.fill_between(band.epoch, band.low, band.high, color=colours[init], alpha=0.2, lw=0)
        loss = history[(history.init == init) & (history.metric == "train/loss")]
        if len(loss):
            band = _mean_band(loss)
            ax_loss.plot(band.epoch, band["mean"], marker="o", ms=3, color=colours[init], label=init)
            ax_loss.fill_between(band.epoch, band.low, band.high, color=colours[init], alpha=0.2, lw=0)
    ax_err.set(
        yscale="log",
        xlabel="epoch (0 = at initialization)",
        ylabel=f"{split} error (1 - accuracy), log",
        title=f"{split} error per epoch",
    )
    ax_loss.set(
        yscale="log", xlabel="epoch", ylabel="train loss (epoch mean), log", title="training loss per epoch"
    )
    for ax in (ax_err, ax_loss):
        ax.grid(True, which="both", alpha=0.3)
    ax_err.legend(fontsize=8)
    fig.suptitle("Mean over seeds; bands: 95% t-interval", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def final_accuracy(runs: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    """Final test error per initializer, every seed a dot, mean with 95% CI, the seed notebook as a cross."""
    inits = list(summary.init)
    colours = palette(inits)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(inits)), 4.2))
    jitter = np.random.default_rng(0)
    for position, init in enumerate(inits):
        done = runs[(runs.init == init) & (runs.status == "complete")]
        errors = 1 - done["test/acc"].astype(float)
        xs = position + jitter.uniform(-0.12, 0.12, size=len(errors))
        ax.scatter(xs, errors, color=colours[init], s=22, alpha=0.8, zorder=3)
        row = summary[summary.init == init].iloc[0]
        if not math.isnan(row.acc_mean):
            low = 1 - row.acc_ci95_high if not math.isnan(row.acc_ci95_high) else 1 - row.acc_mean
            high = 1 - row.acc_ci95_low if not math.isnan(row.acc_ci95_low) else 1 - row.acc_mean
            ax.errorbar(
                position + 0.28,
                1 - row.acc_mean,
                yerr=[[1 - row.acc_mean - low], [high - (1 - row.acc_mean)]],
                fmt="s",
                color="black",
                ms=4,
                capsize=3,
                zorder=4,
            )
        if init in SEED_NOTEBOOK:
            ax.scatter(position - 0.28, 1 - SEED_NOTEBOOK[init], marker="x", color="black", s=40, zorder=4)
    ax.set_xticks(range(len(inits)), inits, rotation=20, ha="right")
    ax.set(
        yscale="log",
        ylabel="final test error (1 - accuracy), log",
        title="Final test error: dots = seeds, square = mean ± 95% CI, x = seed notebook",
    )
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def steps_to_threshold(runs: pd.DataFrame, summary: pd.DataFrame, threshold: str, path: Path) -> None:
    """Optimizer steps until test accuracy first reaches the threshold; runs that never did are counted."""
    inits = list(summary.init)
    colours = palette(inits)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(inits)), 4.0))
    column = f"steps_to_{threshold}"
    for position, init in enumerate(inits):
        done = runs[(runs.init == init) & (runs.status == "complete")]
        reached = done[column].dropna().astype(float) if column in done else pd.Series(dtype=float)
        if len(reached):
            ax.bar(position, reached.median(), color=colours[init], alpha=0.5)
            ax.scatter(np.full(len(reached), position), reached, color=colours[init], s=20, zorder=3)
        ax.annotate(
            f"{len(reached)}/{len(done)} reached",
            (position, 0),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(range(len(inits)), inits, rotation=20, ha="right")
    ax.set(
        ylabel=f"optimizer steps to {threshold}% test accuracy",
        title=f"Convergence speed: steps to {threshold}% (bar = median, dots = seeds)",
    )
    ax.title.set_fontsize(9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def train_loss_by_step(history: pd.DataFrame, inits: list[str], path: Path) -> None:
    """The fine-grained training curve: mean loss over each logging window, against optimizer steps."""
    colours = palette(inits)
    fig, ax = plt.subplots(figsize=(7, 4))
    for init in inits:
        points = history[(history.init == init) & (history.metric == "train/loss_step")]
        if len(points):
            mean = points.groupby("step").value.mean()
            ax.plot(mean.index, mean.values, color=colours[init], label=init, lw=1.2)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="optimizer step, log",
        ylabel="train loss (window mean), log",
        title="Training loss against steps (mean over seeds)",
    )
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "runs too short for a step-level curve", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
