"""``python -m initstudy.diagnose [--out DIR] [overrides]``: signal propagation at step 0 for every network
of a sweep (the DVC ``diagnose`` stages), measured and predicted, averaged over seeds.

The sweep is the one ``python -m initstudy.train --multirun <overrides>`` would run (e.g. ``experiment=depth``);
each (initializer, activation, hidden sizes) is built exactly as its training run builds it at step 0, for
every seed, and measured on the same fixed batch of training images. Writes ``diagnostics.csv``,
``statements.json`` and figures to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from initstudy import atomic, numerics
from initstudy.config import ConfigError, compose_config, repo_root
from initstudy.report.figures import DPI, colour_map
from initstudy.sweep import plan

if TYPE_CHECKING:  # torch is imported in diagnose(), once the numerics profile is applied
    import torch

BATCH_SIZE = 1000  # the fixed batch: the first 1,000 training images
STATISTICS = (
    "pre_mean",
    "pre_std",
    "act_mean",
    "act_std",
    "dead_or_saturated",
    "grad_act_std",
    "weight_grad_std",
)
PREDICTED = ("pre_std", "act_std", "grad_act_std")
AGREEMENT = (0.8, 1.25)  # measured / predicted within this range counts as agreement


def diagnose(overrides: list[str]) -> tuple[pd.DataFrame, dict[str, list[torch.Tensor]]]:
    """Long frame (init, activation, depth, seed, layer, statistic, measured, predicted) over all jobs, and
    the step-0 activations of the first seed of each network (for histograms)."""
    numerics.apply_for_sweep(overrides, multirun=True)
    import torch

    from initstudy.data.datamodule import load_mnist
    from initstudy.propagation import measure, predict
    from initstudy.runner import build_model, configure_process

    jobs = plan(overrides, multirun=True)
    first = compose_config(list(jobs[0].overrides))
    configure_process(first)  # threads and flush-to-zero before the first parallel torch work (loading)
    train_images, train_labels = load_mnist(repo_root() / first.data.root, train=True)
    images, labels = train_images[:BATCH_SIZE], train_labels[:BATCH_SIZE]
    rows, activations = [], {}
    seen: set[tuple] = set()
    for job in jobs:
        key = (job.init, job.activation, job.hidden_sizes, job.seed)
        if key in seen:
            continue
        seen.add(key)
        cfg = compose_config(list(job.overrides))
        configure_process(cfg)  # deterministic algorithms too (the numerics profile)
        model, initializer = build_model(cfg, train_images)
        weight_stds = [initializer.expected_weight_std(layer.weight) for layer in model.linear_layers()]
        stats = measure(model, images, labels)
        predictions = predict(model, weight_stds, images, grad_logits_std=stats[-1].grad_act_std)
        for layer_stats, predicted in zip(stats, predictions, strict=True):
            for statistic in STATISTICS:
                value = getattr(layer_stats, statistic)
                rows.append({"init": job.init, "activation": job.activation, "depth": job.depth, "seed": job.seed,
                             "layer": layer_stats.layer, "statistic": statistic,
                             "measured": math.nan if value is None else value,
                             "predicted": predicted.get(statistic) if statistic in PREDICTED else None})  # fmt: skip
        net = (job.init, job.activation, job.depth)
        if net not in activations:
            with torch.no_grad():
                passed = model.forward_with_intermediates(images)
            activations[net] = [a.flatten() for a in passed.activations]
    return pd.DataFrame(rows), activations


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds, with the mean prediction and the measured/predicted ratio."""
    keys = ["init", "activation", "depth", "layer", "statistic"]
    grouped = frame.groupby(keys, sort=False)
    out = grouped.measured.agg(mean="mean", std="std", seeds="count").reset_index()
    out["predicted"] = grouped.predicted.apply(lambda p: pd.to_numeric(p, errors="coerce").mean()).values
    out["ratio"] = out["mean"] / out["predicted"]
    return out


def statements(summary: pd.DataFrame) -> list[str]:
    """Where measurement and prediction agree, and where they part (activation std, gradient std)."""
    out = []
    low, high = AGREEMENT
    for (init, activation, depth), group in summary.groupby(["init", "activation", "depth"], sort=False):
        net = f"`{init}` ({activation}, {depth} hidden layers)"
        acts = group[(group.statistic == "act_std") & group.predicted.notna()]
        grads = group[
            (group.statistic == "grad_act_std") & group.predicted.notna() & (group.layer < group.layer.max())
        ]
        if acts.empty:
            out.append(f"{net}: no closed-form prediction (data-dependent or zero weights).")
            continue
        if (acts["mean"] == 0).all() and (acts.predicted == 0).all():
            out.append(f"{net}: every activation and every back-propagated gradient below the output layer is "
                       "exactly zero, as the variance argument predicts for zero weights.")  # fmt: skip
            continue
        parts = []
        for name, rows in (("activation std", acts), ("back-propagated gradient std", grads)):
            both_zero = (rows["mean"] == 0) & (rows.predicted == 0)
            off = rows[~both_zero & ((rows.ratio < low) | (rows.ratio > high) | rows.ratio.isna())]
            if rows.empty:
                continue
            if off.empty:
                parts.append(f"{name} agrees with the prediction in every layer (measured/predicted "
                             f"{rows.ratio.min():.2f}–{rows.ratio.max():.2f})")  # fmt: skip
            else:
                worst = off.loc[
                    (off.ratio.fillna(0).apply(lambda r: abs(math.log(r)) if r > 0 else math.inf)).idxmax()
                ]
                parts.append(f"{name} parts from the prediction in {len(off)} of {len(rows)} layers "
                             f"(worst: layer {int(worst.layer)}, measured {worst['mean']:.3g} vs predicted "
                             f"{worst.predicted:.3g})")  # fmt: skip
        hidden = group[(group.statistic == "act_std") & (group.layer < group.layer.max())].sort_values(
            "layer"
        )
        if len(hidden) > 1 and hidden["mean"].iloc[0] > 0:
            factor = hidden["mean"].iloc[-1] / hidden["mean"].iloc[0]
            parts.append(f"activation std changes by x{factor:.3g} from the first to the last hidden layer")
        dead = group[(group.statistic == "dead_or_saturated") & group["mean"].notna()]
        if not dead.empty and dead["mean"].max() > 0.05:
            what = "dead ReLU units" if activation == "relu" else "saturated outputs"
            parts.append(
                f"up to {dead['mean'].max():.0%} {what} (layer {int(dead.loc[dead['mean'].idxmax()].layer)})"
            )
        out.append(f"{net}: " + "; ".join(parts) + ".")
    return out


def figures(summary: pd.DataFrame, activations: dict, out: Path, pair: list[str]) -> dict[str, str]:
    made = {}
    inits = list(dict.fromkeys(summary.init))
    colours = colour_map(inits)
    deepest = summary.depth.max()
    for statistic, title, name in (("act_std", "activation std", "activation_std.png"),
                                   ("grad_act_std", "std of dL/d(activation)", "gradient_std.png")):  # fmt: skip
        nets = summary[(summary.statistic == statistic) & (summary.depth == deepest)]
        panels = list(dict.fromkeys(nets.activation))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, activation in zip(axes[0], panels, strict=True):
            for init in inits:
                rows = nets[(nets.activation == activation) & (nets.init == init)].sort_values("layer")
                if rows.empty or not (rows["mean"] > 0).any():
                    continue
                ax.errorbar(rows.layer, rows["mean"], yerr=rows["std"].fillna(0), color=colours[init], marker="o",
                            ms=3, label=init, capsize=2)  # fmt: skip
                if rows.predicted.notna().any():
                    ax.plot(rows.layer, rows.predicted, color=colours[init], ls=":", lw=1)
            ax.set(yscale="log", xlabel="layer (last = output)", ylabel=f"{title} at step 0, log",
                   title=f"{activation}, {deepest} hidden layers (dotted: predicted)")  # fmt: skip
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=DPI)
        plt.close(fig)
        made[f"Per-layer {title} at initialization"] = name
    chosen = [net for net in activations if net[0] in pair and net[2] == deepest]
    if chosen:
        layers = max(len(activations[net]) for net in chosen)
        shown = sorted({0, layers // 2, layers - 1})
        fig, axes = plt.subplots(
            len(chosen), len(shown), figsize=(3.2 * len(shown), 2.4 * len(chosen)), squeeze=False
        )
        for row, net in enumerate(chosen):
            for col, layer in enumerate(shown):
                ax = axes[row][col]
                if layer < len(activations[net]):
                    ax.hist(activations[net][layer].numpy(), bins=60, color=colours[net[0]], log=True)
                ax.set_title(f"{net[0]} ({net[1]}), layer {layer + 1}", fontsize=8)
                ax.tick_params(labelsize=7)
        fig.suptitle("Activations at step 0 (first seed, fixed batch; counts log)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "activation_histograms.png", dpi=DPI)
        plt.close(fig)
        made["Histograms of activations by layer"] = "activation_histograms.png"
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m initstudy.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/diagnostics"))
    parser.add_argument("--pair", default="random_normal,he_uniform", help="initializers for the histograms")
    parser.add_argument("overrides", nargs="*", help="sweep overrides, as for python -m initstudy.train -m")
    args = parser.parse_args(argv)
    try:
        frame, activations = diagnose(args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = aggregate(frame)
    args.out.mkdir(parents=True, exist_ok=True)
    pair = [name for name in args.pair.split(",") if name in set(summary.init)] or list(
        dict.fromkeys(summary.init)
    )[:2]
    made = figures(summary, activations, args.out, pair)
    atomic.write_text(args.out / "diagnostics.csv", summary.to_csv(index=False))
    atomic.write_json(args.out / "statements.json", {"statements": statements(summary), "figures": made})
    print(f"diagnostics of {summary.groupby(['init', 'activation', 'depth']).ngroups} networks -> {args.out}")


if __name__ == "__main__":
    main()
