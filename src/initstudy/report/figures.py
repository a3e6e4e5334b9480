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


def titled(title: str, group: str, separator: str = ": ") -> str:
    """A figure's title, led by its group in a grouped sweep (figures of different groups look alike otherwise)."""
    return f"{group}{separator}{title}" if group else title


def palette(inits: list[str]) -> dict[str, tuple]:
    """A fixed colour per initializer name: its position among all known options (conf/init/)."""
    known = group_options("init")
    names = known + [name for name in inits if name not in known]
    cmap = plt.get_cmap("tab20")
    # tab20 pairs a strong and a pale shade: hand out the ten strong ones first.
    return {name: cmap((2 * index) % 20 + (2 * index // 20) % 2) for index, name in enumerate(names)}


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


def learning_curves(history: pd.DataFrame, inits: list[str], split: str, path: Path, group: str = "") -> None:
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
    fig.suptitle(titled("Mean over seeds; bands: 95% t-interval", group), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def final_accuracy(runs: pd.DataFrame, summary: pd.DataFrame, path: Path, group: str = "") -> None:
    """Final test accuracy per initializer, every seed a dot, mean with 95% CI, the seed notebook as a cross.

    Left: every initializer on a log scale of test error (a constant predictor and a trained net differ by
    40x). Right: a linear zoom on the initializers that train, where their differences are visible.
    """
    inits = list(summary.init)
    colours = palette(inits)
    trained = [init for init in inits if summary.set_index("init").acc_mean.get(init, 0) > 0.5]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(inits)), 4.2), width_ratios=[1, 1.3])
    jitter = np.random.default_rng(0)
    for ax, names, as_error in ((axes[0], inits, True), (axes[1], trained, False)):
        for position, init in enumerate(names):
            done = runs[(runs.init == init) & (runs.status == "complete")]
            values = done["test/acc"].astype(float)
            values = 1 - values if as_error else values
            xs = position + jitter.uniform(-0.12, 0.12, size=len(values))
            ax.scatter(xs, values, color=colours[init], s=22, alpha=0.85, zorder=3)
            row = summary[summary.init == init].iloc[0]
            if not math.isnan(row.acc_mean):
                low = row.acc_ci95_low if not math.isnan(row.acc_ci95_low) else row.acc_mean
                high = row.acc_ci95_high if not math.isnan(row.acc_ci95_high) else row.acc_mean
                centre, low, high = (
                    (1 - row.acc_mean, 1 - high, 1 - low) if as_error else (row.acc_mean, low, high)
                )
                ax.errorbar(position + 0.28, centre, yerr=[[centre - low], [high - centre]], fmt="s",
                            color="black", ms=4, capsize=3, zorder=4)  # fmt: skip
            if init in SEED_NOTEBOOK:
                reference = 1 - SEED_NOTEBOOK[init] if as_error else SEED_NOTEBOOK[init]
                ax.scatter(position - 0.28, reference, marker="x", color="black", s=40, zorder=4)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.grid(True, which="both", axis="y", alpha=0.3)
    axes[0].set(yscale="log", ylabel="final test error (1 - accuracy), log", title="all initializers")
    axes[1].set(ylabel="final test accuracy", title="zoom: initializers above 50% accuracy")
    fig.suptitle(
        titled("Final test accuracy: dots = seeds, square = mean ± 95% CI, x = seed notebook", group),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def steps_to_threshold(
    runs: pd.DataFrame, summary: pd.DataFrame, threshold: str, path: Path, group: str = ""
) -> None:
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
        title=titled(f"Convergence speed: steps to {threshold}% (bar = median, dots = seeds)", group, "\n"),
    )
    ax.title.set_fontsize(9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def train_loss_by_step(history: pd.DataFrame, inits: list[str], path: Path, group: str = "") -> None:
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
        title=titled("Training loss against steps (mean over seeds)", group, "\n"),
    )
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "runs too short for a step-level curve", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
