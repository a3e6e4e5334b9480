"""``python -m initstudy.diagnose [--out DIR] [overrides]``: signal propagation at step 0 for every network
of a sweep (the DVC ``diagnose`` stages), measured and predicted, averaged over seeds: per layer the scale of
activations and gradients, and how the correlation of two inputs evolves through depth (the correlation map);
per network the singular values of the input-output Jacobian (dynamical isometry).

The sweep is the one ``python -m initstudy.train --multirun <overrides>`` would run (e.g. ``experiment=depth``);
each (initializer, activation, hidden sizes) is built exactly as its training run builds it at step 0, for
every seed, and measured on the same fixed batch of training images. Writes ``diagnostics.csv`` (per layer),
``jacobian.csv`` (per network), ``statements.json`` and figures to ``--out``.
"""

from __future__ import annotations

# First: pins numpy's OpenBLAS (kernels, threads) before numpy loads it; the predictions are its products.
from initstudy.core import blas  # noqa: F401

# isort: split

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from initstudy.core.faults import pause_point
from initstudy.core.paths import repo_root
from initstudy.core.style import DPI, colour_map
from initstudy.sweep import jobs
from initstudy.sweep.jobs import plan_configs, task_config

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
# Per layer, mean over the image pairs (propagation.PAIRS): cosine similarity of two inputs' pre-activations.
CORRELATION = "correlation"
JACOBIAN_COLUMNS = ("mean_sq", "predicted_mean_sq", "s_05", "s_50", "s_95", "relative_spread")
AGREEMENT = (0.8, 1.25)  # measured / predicted within this range counts as agreement


@dataclass
class Diagnosis:
    layers: pd.DataFrame  # long: init, activation, depth, seed, layer, statistic, measured, predicted
    jacobians: pd.DataFrame  # one row per network and seed: JACOBIAN_COLUMNS
    activations: dict[tuple, list[torch.Tensor]]  # step-0 activations, first seed of each network
    singular_values: dict[tuple, np.ndarray]  # the Jacobian's singular values, first seed of each network


def jacobian_row(singular_values: np.ndarray, predicted: float | None) -> dict[str, float]:
    """Scale and spread of one network's Jacobian spectrum: relative spread = std(s) / rms(s), 0 for an
    isometry (every singular value equal), towards 1 when a few directions carry all the gain."""
    rms = float(np.sqrt((singular_values**2).mean()))
    s_05, s_50, s_95 = (float(v) for v in np.quantile(singular_values, [0.05, 0.5, 0.95]))
    return {"mean_sq": rms**2, "predicted_mean_sq": math.nan if predicted is None else predicted,
            "s_05": s_05, "s_50": s_50, "s_95": s_95,
            "relative_spread": float(singular_values.std()) / rms if rms > 0 else math.nan}  # fmt: skip


def init_label(overrides: tuple[str, ...] | list[str], init: str) -> str:
    """The initializer as the diagnostics name it: its option, plus the ``init.<key>=<value>`` overrides a
    sweep varies (``gaussian (scale=2.0)``), so that a sweep over an initializer's own parameter (Schoenholz
    et al.'s sigma_w^2, He et al.'s N(0, 1/n) against N(0, 2/n)) keeps one network per value."""
    own = [o.removeprefix("init.") for o in overrides if o.startswith("init.") and "=" in o]
    return f"{init} ({', '.join(own)})" if own else init


def mean_over_pairs(correlations: np.ndarray) -> np.ndarray:
    """Per layer, the mean over image pairs; NaN where no pair has one (zero activations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN layers: NaN is the answer
        return np.nanmean(correlations, axis=0)


def diagnose(overrides: list[str]) -> Diagnosis:
    """Every network of the sweep at step 0, measured and predicted (see :class:`Diagnosis`)."""
    jobs.apply_for_sweep(overrides, multirun=True)
    import torch

    from initstudy.data.datamodule import load_mnist
    from initstudy.nn import propagation
    from initstudy.train.fit import build_model, configure_process

    planned = plan_configs(overrides, multirun=True)
    first = task_config(planned[0][1])
    configure_process(first)  # threads and flush-to-zero before the first parallel torch work (loading)
    train_images, train_labels = load_mnist(repo_root() / first.data.root, train=True)
    images, labels = train_images[:BATCH_SIZE], train_labels[:BATCH_SIZE]
    pause_point("diagnose")
    rows, activations, jacobians, spectra = [], {}, [], {}
    correlation_predictions: dict[tuple, np.ndarray] = {}  # seed-independent: the same stds and images
    seen: set[tuple] = set()
    for job, composed in planned:
        label = init_label(job.overrides, job.init)
        key = (label, job.activation, job.hidden_sizes, job.seed)
        if key in seen:
            continue
        seen.add(key)
        cfg = task_config(composed)  # the job's config as its training run sees it
        configure_process(cfg)  # deterministic algorithms too (the numerics profile)
        model, initializer = build_model(cfg, train_images)
        weight_stds = [initializer.expected_weight_std(layer.weight) for layer in model.linear_layers()]
        bias_vars = propagation.bias_variances(model)
        stats = propagation.measure(model, images, labels)
        predictions = propagation.predict(model, weight_stds, images, stats[-1].grad_act_std, bias_vars)
        key_of_prediction = (job.activation, job.hidden_sizes, tuple(weight_stds), tuple(bias_vars))
        if key_of_prediction not in correlation_predictions:
            correlation_predictions[key_of_prediction] = propagation.predict_correlations(
                model, weight_stds, bias_vars, images
            )
        measured_c = mean_over_pairs(propagation.measure_correlations(model, images))
        predicted_c = mean_over_pairs(correlation_predictions[key_of_prediction])
        for layer_stats, predicted in zip(stats, predictions, strict=True):
            for statistic in STATISTICS:
                value = getattr(layer_stats, statistic)
                rows.append({"init": label, "activation": job.activation, "depth": job.depth, "seed": job.seed,
                             "layer": layer_stats.layer, "statistic": statistic,
                             "measured": math.nan if value is None else value,
                             "predicted": predicted.get(statistic) if statistic in PREDICTED else None})  # fmt: skip
            rows.append({"init": label, "activation": job.activation, "depth": job.depth, "seed": job.seed,
                         "layer": layer_stats.layer, "statistic": CORRELATION,
                         "measured": measured_c[layer_stats.layer - 1],
                         "predicted": predicted_c[layer_stats.layer - 1]})  # fmt: skip
        singular_values = propagation.jacobian_singular_values(model, images)
        predicted_gain = propagation.predict_jacobian_mean_square(model, weight_stds, images, bias_vars)
        jacobians.append({"init": label, "activation": job.activation, "depth": job.depth, "seed": job.seed,
                          **jacobian_row(singular_values, predicted_gain)})  # fmt: skip
        net = (label, job.activation, job.depth)
        if net not in activations:
            with torch.no_grad():
                passed = model.forward_with_intermediates(images)
            activations[net] = [a.flatten() for a in passed.activations]
            spectra[net] = singular_values
    return Diagnosis(pd.DataFrame(rows), pd.DataFrame(jacobians), activations, spectra)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds, with the mean prediction and the measured/predicted ratio."""
    keys = ["init", "activation", "depth", "layer", "statistic"]
    grouped = frame.groupby(keys, sort=False)
    out = grouped.measured.agg(mean="mean", std="std", seeds="count").reset_index()
    out["predicted"] = grouped.predicted.apply(lambda p: pd.to_numeric(p, errors="coerce").mean()).values
    out["ratio"] = out["mean"] / out["predicted"]
    return out


def aggregate_jacobians(jacobians: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each spectrum statistic, one row per network."""
    keys = ["init", "activation", "depth"]
    grouped = jacobians.groupby(keys, sort=False)[list(JACOBIAN_COLUMNS)]
    out = grouped.mean().reset_index()
    spread = grouped.std()["relative_spread"].to_numpy()
    out.insert(out.columns.get_loc("relative_spread") + 1, "relative_spread_std", spread)
    out.insert(len(keys), "seeds", grouped.size().to_numpy())
    return out


def correlation_statements(summary: pd.DataFrame) -> list[str]:
    """Per activation at the deepest depth: where two inputs' correlation ends up, measured and predicted."""
    out = []
    deepest = summary.depth.max()
    rows = summary[(summary.statistic == CORRELATION) & (summary.depth == deepest)]
    for (init, activation), group in rows.groupby(["init", "activation"], sort=False):
        ordered = group.sort_values("layer")
        hidden = ordered[ordered.layer <= deepest]
        if hidden["mean"].isna().all():
            continue
        first, last = hidden.iloc[0], hidden.iloc[-1]
        predicted = (
            ""
            if pd.isna(last.predicted)
            else f" (mean-field prediction {first.predicted:.3f} -> {last.predicted:.3f})"
        )
        out.append(f"`{init}` ({activation}, {deepest} hidden layers): two inputs' correlation goes from "
                   f"{first['mean']:.3f} at layer 1 to {last['mean']:.3f} at layer {int(last.layer)}{predicted}.")  # fmt: skip
    return out


def jacobian_statements(jacobians: pd.DataFrame) -> list[str]:
    """Per activation at the deepest depth: the Jacobian's scale and spread (dynamical isometry: spread 0)."""
    out = []
    deepest = jacobians.depth.max()
    for row in jacobians[jacobians.depth == deepest].itertuples(index=False):
        if not row.mean_sq > 0:
            out.append(
                f"`{row.init}` ({row.activation}, {deepest} hidden layers): the input-output Jacobian is zero."
            )
            continue
        predicted = "" if math.isnan(row.predicted_mean_sq) else f" (predicted {row.predicted_mean_sq:.3g})"
        out.append(f"`{row.init}` ({row.activation}, {deepest} hidden layers): input-output Jacobian mean squared "
                   f"singular value {row.mean_sq:.3g}{predicted}, singular values 5/50/95% {row.s_05:.2g} / "
                   f"{row.s_50:.2g} / {row.s_95:.2g}, relative spread {row.relative_spread:.2f} (0 = isometry).")  # fmt: skip
    return out


def statements(summary: pd.DataFrame) -> list[str]:
    """Where measurement and prediction agree, and where they part (activation std, gradient std)."""
    out = []
    low, high = AGREEMENT
    for (init, activation, depth), group in summary.groupby(["init", "activation", "depth"], sort=False):
        net = f"`{init}` ({activation}, {depth} hidden layers)"
        group = group[group.statistic != CORRELATION]
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


def correlation_figure(summary: pd.DataFrame, out: Path) -> dict[str, str]:
    """The correlation map through depth for the deepest networks: measured (markers) against mean-field
    (dotted), one panel per activation."""
    deepest = summary.depth.max()
    rows = summary[(summary.statistic == CORRELATION) & (summary.depth == deepest)]
    if rows.empty or rows["mean"].isna().all():
        return {}
    colours = colour_map(list(dict.fromkeys(summary.init)))
    panels = list(dict.fromkeys(rows.activation))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, activation in zip(axes[0], panels, strict=True):
        for init, net in rows[rows.activation == activation].groupby("init", sort=False):
            net = net.sort_values("layer")
            if net["mean"].isna().all():
                continue
            ax.errorbar(net.layer, net["mean"], yerr=net["std"].fillna(0), color=colours[init], marker="o", ms=3,
                        capsize=2, label=init)  # fmt: skip
            if net.predicted.notna().any():
                ax.plot(net.layer, net.predicted, color=colours[init], ls=":", lw=1)
        ax.set(xlabel="layer (last = output)", ylabel="cosine similarity of two inputs' pre-activations",
               title=f"{activation}, {deepest} hidden layers (dotted: mean field)")  # fmt: skip
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "correlation_map.png", dpi=DPI)
    plt.close(fig)
    return {"Correlation of two inputs through depth at initialization": "correlation_map.png"}


def jacobian_figure(singular_values: dict[tuple, np.ndarray], out: Path) -> dict[str, str]:
    """The distribution of the Jacobian's singular values (empirical CDF, log axis) for the deepest networks,
    one panel per activation: an isometry is a step at 1."""
    if not singular_values:
        return {}
    deepest = max(net[2] for net in singular_values)
    chosen = {net: values for net, values in singular_values.items() if net[2] == deepest}
    colours = colour_map(list(dict.fromkeys(net[0] for net in singular_values)))
    panels = list(dict.fromkeys(net[1] for net in chosen))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    drawn = False
    for ax, activation in zip(axes[0], panels, strict=True):
        for (init, net_activation, _), values in chosen.items():
            positive = np.sort(values[values > 0])
            if net_activation != activation or not len(positive):
                continue
            ax.step(positive, np.arange(1, len(positive) + 1) / len(values), where="post", color=colours[init],
                    label=init)  # fmt: skip
            drawn = True
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set(xscale="log", xlabel="singular value of d(last hidden layer)/d(input), log", ylabel="share of values",
               title=f"{activation}, {deepest} hidden layers (first seed)")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return {}
    fig.tight_layout()
    fig.savefig(out / "jacobian_spectrum.png", dpi=DPI)
    plt.close(fig)
    return {"Singular values of the input-output Jacobian at initialization": "jacobian_spectrum.png"}
