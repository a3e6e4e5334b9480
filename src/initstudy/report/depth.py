"""The depth report: final accuracy and convergence against depth, per activation and initializer, with the
step-0 diagnostics of the same networks beside them (so the failure is visible before training starts)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from initstudy.core import atomic
from initstudy.core.style import colour_map
from initstudy.nn.gains import CRITICAL_GAINS
from initstudy.nn.propagation import PAIRS
from initstudy.report.depth_signal import last_hidden_correlation, signal_statement
from initstudy.report.endpoints import first_evaluations, planned_steps, times_to
from initstudy.report.figures import save, titled
from initstudy.report.inference import survival
from initstudy.report.load import SweepRuns, group_folder, parse_group, split_groups, with_group_keys
from initstudy.report.papers.rules import Rule
from initstudy.report.stats import t_interval
from initstudy.report.study_rules import failure_rule
from initstudy.report.tables import cell, markdown_table

FAILS_BELOW = 0.5  # final test accuracy under this (or diverged, or no complete run): "fails to train"
SPEED_THRESHOLD = 0.90  # the reduced runs rarely reach 95%: convergence speed is measured to 90%
SPEED = round(100 * SPEED_THRESHOLD)  # in column, file and text names: steps_to_90_km_median, "90%"
STEPS, REACHED, TOTAL = f"steps_to_{SPEED}_km_median", f"reached_{SPEED}", f"total_{SPEED}"
# True where the median is only known as "by the first evaluation pass" (initstudy.report.endpoints.times_to)
UPPER = f"steps_to_{SPEED}_upper_bound"
DEPTH_AXES = ("model.activation", "model.depth")  # laid out by this report itself, never split into groups


def is_depth_sweep(runs: pd.DataFrame) -> bool:
    """Depth varies, or the activation does outside any group (the depth layout, and manifests without groups):
    an init x activation sweep whose groups hold the activation gets the main report, per group."""
    if not {"activation", "depth"} <= set(runs.columns):
        return False
    grouped_by_activation = any("model.activation" in parse_group(group) for group in runs.group)
    return runs.depth.nunique() > 1 or (runs.activation.nunique() > 1 and not grouped_by_activation)


def summarize_depth(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per (activation, depth, initializer). Steps to SPEED_THRESHOLD are the runs' interpolated
    crossings of the per-step evaluation series (metrics.json), right-censored: Kaplan-Meier median over the
    cell's runs, with the count that got there. A crossing inside the first evaluation interval counts as
    reached by the first pass, and a median resting on such runs is marked as an upper bound (``UPPER``)."""
    horizon = planned_steps(runs[runs.status == "complete"])
    first_passes = first_evaluations(history) if len(history) else {}
    rows = []
    for (activation, depth, init), group in runs.groupby(["activation", "depth", "init"], sort=False):
        done = group[group.status == "complete"]
        acc = done["test/acc"].astype(float)
        diverged = done.get("diverged", pd.Series(dtype=bool)).fillna(False).astype(bool)
        times = times_to(group, SPEED_THRESHOLD, first_passes)
        curve = survival(times.steps.tolist(), times.reached.tolist(), horizon)
        bounded = times.steps[times.bounded]
        failed = int(
            (acc < FAILS_BELOW).sum()
            + diverged[acc >= FAILS_BELOW].sum()
            + (group.status != "complete").sum()
        )
        acc_low, acc_high = t_interval(acc)
        fail_low, fail_high = failure_interval(failed, len(group))
        rows.append({
            "activation": activation, "depth": int(depth), "init": init, "n_runs": len(group),
            "acc_mean": acc.mean(), "acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan, "acc_min": acc.min(),
            "acc_ci_low": acc_low, "acc_ci_high": acc_high,
            "n_diverged": int(diverged.sum()), "n_failed_to_train": failed,
            "fail_rate_ci_low": fail_low, "fail_rate_ci_high": fail_high,
            STEPS: curve.median, UPPER: bool(len(bounded) and curve.median <= bounded.max()),
            REACHED: curve.n_reached, TOTAL: curve.n_total,
            f"steps_to_{SPEED}_rmst": curve.rmst,
        })  # fmt: skip
    return (
        pd.DataFrame(rows).sort_values(["activation", "init", "depth"], kind="stable").reset_index(drop=True)
    )


def failure_interval(failed: int, runs: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of a cell's probability to fail to train: with 5 seeds, 0/5 still allows up
    to 52%, so "trains" means "failed in none of these seeds", not "never fails"."""
    if runs == 0:
        return (math.nan, math.nan)
    interval = stats.binomtest(failed, runs).proportion_ci(confidence_level=0.95, method="exact")
    return (float(interval.low), float(interval.high))


def baseline_statement(summary: pd.DataFrame) -> list[str]:
    """The nonlinear activations against the linear baseline (a deep linear network is a linear classifier at
    any depth): at each depth, the best initializer's mean accuracy of each activation and its gain over the
    linear one. What the nonlinearity adds, and whether depth takes it away."""
    if "linear" not in set(summary.activation) or summary.activation.nunique() < 2:
        return []
    best = summary.groupby(["activation", "depth"]).acc_mean.max().unstack("depth")
    linear = best.loc["linear"]
    parts = []
    for activation in [a for a in dict.fromkeys(summary.activation) if a != "linear"]:
        gains = ", ".join(
            f"{depth}: {best.loc[activation, depth] - linear[depth]:+.3f}" for depth in best.columns
        )
        parts.append(f"{activation} (best initializer, per depth) {gains}")
    linear_text = ", ".join(f"{depth}: {linear[depth]:.3f}" for depth in best.columns)
    return [
        "**The linear baseline.** Without a nonlinearity a network of any depth is a linear classifier; its best "
        f"initializer's mean accuracy per depth is {linear_text}. The gain of each activation over it, same "
        f"depth: {'; '.join(parts)}.",
        "",
    ]


def adam_eps(config: dict) -> float | None:
    """The eps of the sweep's optimizer when it is Adam (or AdamW), else None."""
    optimizer = config.get("optimizer", {})
    if str(optimizer.get("_target_", "")).rsplit(".", 1)[-1] not in ("Adam", "AdamW"):
        return None
    return float(optimizer.get("eps", 1e-8))


def diagnostics_beside(
    summary: pd.DataFrame, diagnostics: pd.DataFrame | None, eps: float | None = None
) -> pd.DataFrame:
    """Step-0 signal of the same networks: activation std ratio last/first hidden layer (the forward signal's
    scale), two images' correlation at the last hidden layer (its information: initstudy.report.depth_signal),
    gradient std ratio first/last hidden layer, the worst share of dead (ReLU) or saturated (tanh) units, and the weight
    gradients' std (median over the hidden layers). Under Adam (``eps``) also the share of a full step that
    Adam's first update takes at that gradient, g / (g + eps): Adam divides a gradient by its own scale, so a
    small gradient alone slows nothing, until it falls below eps, where the step becomes ~lr * g / eps."""
    if diagnostics is None or diagnostics.empty:
        return summary
    out = summary.copy()
    columns = ["act_std_last_over_first", "grad_std_first_over_last", "corr_last", "dead_or_saturated_max",
               "weight_grad_std_median", *(["adam_step_share"] if eps is not None else [])]  # fmt: skip
    for column in columns:
        out[column] = math.nan
    for index, row in out.iterrows():
        net = diagnostics[(diagnostics.init == row.init) & (diagnostics.activation == row.activation)
                          & (diagnostics.depth == row.depth)]  # fmt: skip
        hidden = net[net.layer <= row.depth]
        acts = hidden[hidden.statistic == "act_std"].sort_values("layer")["mean"].to_numpy()
        grads = hidden[hidden.statistic == "grad_act_std"].sort_values("layer")["mean"].to_numpy()
        dead = hidden[hidden.statistic == "dead_or_saturated"]["mean"]
        if len(acts) > 1 and acts[0] > 0:
            out.loc[index, "act_std_last_over_first"] = acts[-1] / acts[0]
        if len(grads) > 1 and grads[-1] > 0:
            out.loc[index, "grad_std_first_over_last"] = grads[0] / grads[-1]
        if dead.notna().any():
            out.loc[index, "dead_or_saturated_max"] = dead.max()
        out.loc[index, "corr_last"] = last_hidden_correlation(
            diagnostics, row.init, row.activation, row.depth
        )
        weight_grads = hidden[hidden.statistic == "weight_grad_std"]["mean"].dropna()
        if len(weight_grads):
            median = float(weight_grads.median())
            out.loc[index, "weight_grad_std_median"] = median
            if eps is not None:
                out.loc[index, "adam_step_share"] = median / (median + eps)
    return out


def adam_statement(summary: pd.DataFrame, eps: float | None) -> list[str]:
    """Which cells fail against where their step-0 weight gradients sit relative to Adam's eps."""
    if eps is None or "weight_grad_std_median" not in summary.columns:
        return []
    known = summary[summary.weight_grad_std_median.notna()]
    below, above = known[known.weight_grad_std_median < eps], known[known.weight_grad_std_median >= eps]
    failing = lambda cells: int((cells.n_failed_to_train > 0).sum())  # noqa: E731
    deepest_below = below.sort_values("weight_grad_std_median").head(1)
    example = "".join(f" (smallest: {r.init}, {r.activation}, {r.depth} layers, {r.weight_grad_std_median:.1e})"
                      for r in deepest_below.itertuples())  # fmt: skip
    failing_above = above[above.n_failed_to_train > 0]
    margin = ""
    if len(failing_above):
        highest = float(failing_above.weight_grad_std_median.max())
        clear = above[above.weight_grad_std_median > highest]
        partly = int((failing_above.n_failed_to_train < failing_above.n_runs).sum())
        margin = (f" Those {len(failing_above)} lie within x{highest / eps:.3g} of eps (up to {highest:.2g}), and "
                  f"{partly} of them fail in some seeds only: the boundary is a band just above eps, not eps itself, "
                  "which a step-0 measurement cannot place more finely (how the gradients move during training is "
                  f"not recorded for these runs); none of the {len(clear)} cells above {highest:.2g} fails.")  # fmt: skip
    return [
        f"**The failing cells against Adam's eps (eps = {eps:g}): one explanation, tested elsewhere.** Adam's step "
        "is lr * m / (sqrt(v) + eps): for gradients well above eps it is about lr whatever their scale, so a "
        "vanishing gradient alone does not make updates small; once the gradients fall below eps the step shrinks "
        "to about lr * g / eps. Measured at step 0 (median over hidden layers of the weight gradients' std, "
        f"`weight grad` below; `Adam step` = g / (g + eps)): {len(below)} cells sit below eps{example}, and "
        f"{failing(below)} of them fail to train in at least one seed; {len(above)} cells sit above it, and "
        f"{failing(above)} of them fail.{margin} These cells cannot tell eps from the vanished gradient itself: "
        "the step-0 gradient and its decay through the layers move together here. The eps experiment trains the "
        "boundary cells again with only eps changed and judges this explanation (`reports/epsilon/report.md`, "
        '"What this says about the depth report\'s explanation").',
        "",
    ]


def accuracy_figure(summary: pd.DataFrame, path: Path, group: str = "") -> Figure:
    """Final test accuracy against depth per activation (used by the earlier depth layout)."""
    activations = list(dict.fromkeys(summary.activation))
    colours = colour_map(dict.fromkeys(summary.init))
    fig, axes = plt.subplots(
        1, len(activations), figsize=(5.5 * len(activations), 4), squeeze=False, sharey=True
    )
    for ax, activation in zip(axes[0], activations, strict=True):
        for init, rows in summary[summary.activation == activation].groupby("init", sort=False):
            ax.errorbar(rows.depth, rows.acc_mean, yerr=rows.acc_std.fillna(0), marker="o", ms=4, capsize=2,
                        color=colours[init], label=init)  # fmt: skip
        ax.axhline(FAILS_BELOW, color="grey", ls=":", lw=1)
        ax.set(xscale="log", xlabel="hidden layers (log)", ylabel="final test accuracy", title=activation)
        ax.set_xticks(sorted(summary.depth.unique()), [str(d) for d in sorted(summary.depth.unique())])
        ax.xaxis.set_minor_formatter(
            matplotlib.ticker.NullFormatter()
        )  # the log axis' own labels would overlap
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        titled(
            "Final test accuracy against depth (mean ± std over seeds; dotted: fails-to-train line)", group
        ),
        fontsize=9,
    )
    fig.tight_layout()
    return save(fig, path)


def count_annotations(summary: pd.DataFrame, column: str, reached: str, total: str, fmt: str,
                      upper: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Cell texts for :func:`heatmap_figure` that carry their count: "412 (2/3)", or "– (0/3)" when no run
    got there; a median over the runs that reached a threshold means little without how many did. Where the
    boolean column ``upper`` is True the value is an upper bound: "≤100 (5/5)"."""
    bounds = summary[upper] if upper and upper in summary else pd.Series(False, index=summary.index)
    texts = [
        f"{'–' if pd.isna(value) else ('≤' if bound is True or bound == 1 else '') + format(value, fmt)}"
        f" ({int(done)}/{int(runs)})"
        for value, bound, done, runs in zip(
            summary[column], bounds, summary[reached], summary[total], strict=True
        )
    ]
    return pd.DataFrame({column: texts}, index=summary.index)


def _cell_texts(summary: pd.DataFrame, column: str, fmt: str, annotations: pd.DataFrame | None) -> pd.Series:
    """One text per summary row: its annotation when given, else the value formatted ("–" for none)."""
    texts = summary[column].map(lambda value: "–" if pd.isna(value) else format(value, fmt))
    if annotations is None:
        return texts
    given = annotations[column] if column in annotations else annotations.iloc[:, 0]
    given = given.reindex(summary.index)
    return given.where(given.map(lambda text: isinstance(text, str)), texts)


def _ink(colour: tuple) -> str:
    """Black on light cells, white on dark ones (relative luminance), so every annotation stays legible."""
    red, green, blue = colour[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def heatmap_figure(
    summary: pd.DataFrame,
    column: str,
    title: str,
    path: Path,
    fmt: str,
    group: str = "",
    annotations: pd.DataFrame | None = None,
    colorbar_label: str | None = None,
) -> Figure:
    """``column`` per initializer (rows) and depth (columns), one panel per activation on one colour scale.

    ``annotations``: strings indexed like ``summary``, in a column named ``column`` (or its only column), the
    same shape as the values they label; shown in the cells instead of the formatted value, e.g.
    :func:`count_annotations`' "412 (2/3)". Cells without a run stay grey with "–".
    """
    activations = list(dict.fromkeys(summary.activation))
    inits = list(dict.fromkeys(summary.init))
    depths = sorted(summary.depth.unique())
    texts = _cell_texts(summary, column, fmt, annotations)
    finite = summary[column].astype(float)
    finite = finite[np.isfinite(finite)]
    norm = matplotlib.colors.Normalize(*(finite.min(), finite.max()) if len(finite) else (0, 1))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e4e4e4")
    longest = max((len(text) for text in texts), default=1)
    cell_width = max(0.55, 0.065 * longest + 0.15)
    fig, axes = plt.subplots(
        1, len(activations), squeeze=False, layout="constrained",
        figsize=(len(activations) * (1.7 + cell_width * len(depths)) + 1.0, 1.5 + 0.5 * len(inits)),
    )  # fmt: skip
    image = None
    for ax, activation in zip(axes[0], activations, strict=True):
        part = summary[summary.activation == activation].assign(_text=texts)
        values = part.pivot(index="init", columns="depth", values=column).reindex(index=inits, columns=depths)
        labels = part.pivot(index="init", columns="depth", values="_text").reindex(
            index=inits, columns=depths
        )
        grid = values.to_numpy(dtype=float)
        image = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm)
        for (i, j), value in np.ndenumerate(grid):
            text = labels.iat[i, j] if isinstance(labels.iat[i, j], str) else "–"
            ink = "black" if math.isnan(value) else _ink(cmap(norm(value)))
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=ink)
        ax.set_xticks(range(len(depths)), [str(d) for d in depths], fontsize=9)
        ax.set_yticks(range(len(inits)), inits, fontsize=9)
        ax.set_xlabel("hidden layers", fontsize=9)
        ax.set_title(activation, fontsize=10)
    colorbar = fig.colorbar(image, ax=axes[0].tolist(), fraction=0.04, pad=0.02)
    colorbar.set_label(colorbar_label or title.split(" (")[0], fontsize=8)  # the title less its notes
    colorbar.ax.tick_params(labelsize=8)
    fig.suptitle(titled(title, group), fontsize=10)
    return save(fig, path)


def failure_p(failed: int, runs: int, failed_at_shallowest: int, runs_at_shallowest: int) -> float:
    """One-sided Fisher exact p that a cell fails more often than the initializer's shallowest depth."""
    table = [[failed, runs - failed], [failed_at_shallowest, runs_at_shallowest - failed_at_shallowest]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def cell_words(row: Any) -> str:
    """A cell's failures beside its accuracies (mean ± sd, lowest), so that runs on both sides of the 50% line
    that form one cluster read as such, and the 95% interval of its failure rate."""
    return (f"{row.n_failed_to_train}/{row.n_runs} runs below {FAILS_BELOW:.0%} or diverged, accuracy "
            f"{row.acc_mean:.3f} ± {row.acc_std:.3f} (lowest {row.acc_min:.3f}), failure rate 95% interval "
            f"[{row.fail_rate_ci_low:.0%}, {row.fail_rate_ci_high:.0%}]")  # fmt: skip


def signal_words(row: Any) -> str:
    """The step-0 signal of a cell: the activation and gradient std across the layers, and the forward
    correlation between two images at the last hidden layer (initstudy.report.depth_signal)."""
    words = ""
    if "act_std_last_over_first" in row._fields and not math.isnan(row.act_std_last_over_first):
        words = (f"; at step 0 its activation std changes by x{row.act_std_last_over_first:.2g} from the "
                 f"first to the last hidden layer and its gradient std by x{row.grad_std_first_over_last:.2g} "
                 f"from the last to the first")  # fmt: skip
    if "corr_last" in row._fields and not math.isnan(row.corr_last):
        words += f"; two images' correlation at its last hidden layer is {row.corr_last:.3f}"
    return words


def init_statement(init: str, rows: pd.DataFrame, rule: Rule) -> tuple[float, str]:
    """(first depth where ``rule`` says it fails, or inf; the words) for one initializer of one activation. A
    depth with fewer runs than the rule needs is not judged."""
    rows = rows.sort_values("depth")
    shallowest = rows.iloc[0]
    for row in rows.itertuples(index=False):
        p = failure_p(row.n_failed_to_train, row.n_runs, shallowest.n_failed_to_train, shallowest.n_runs)
        judged = min(row.n_runs, shallowest.n_runs) >= rule.min_seeds
        if row.depth != shallowest.depth and judged and p <= rule.value:
            return row.depth, (f"`{init}` fails from {row.depth} layers ({cell_words(row)}; more than at "
                               f"{shallowest.depth} layers, Fisher p = {p:.3f}){signal_words(row)}")  # fmt: skip
    some = rows[rows.n_failed_to_train > 0]
    if len(some):
        row = next(some.itertuples(index=False))
        p = failure_p(row.n_failed_to_train, row.n_runs, shallowest.n_failed_to_train, shallowest.n_runs)
        versus = (
            f"Fisher p = {p:.2f} against {shallowest.depth} layers"
            if row.depth != shallowest.depth
            else ("its shallowest depth")
        )
        return math.inf, (f"`{init}` fails in some seeds but at no depth by the rule (first at {row.depth} layers: "
                          f"{cell_words(row)}; {versus})")  # fmt: skip
    deepest = next(rows.iloc[::-1].itertuples(index=False))
    return math.inf, (f"`{init}` failed in no seed at any depth (at {deepest.depth} layers: {cell_words(deepest)}: "
                      f"no failure in {deepest.n_runs} runs still allows up to {deepest.fail_rate_ci_high:.0%})")  # fmt: skip


def statements(summary: pd.DataFrame, rule: Rule | None = None) -> list[str]:
    """Per activation: from which depth each initializer fails by ``rule`` (conf/experiment/claims/depth.yaml,
    written before the runs were read), with the step-0 signal. The listing order is by that depth; two
    initializers are not compared with each other."""
    rule = rule or failure_rule()
    out = []
    for activation, group in summary.groupby("activation", sort=False):
        found = sorted((init_statement(init, rows, rule) for init, rows in group.groupby("init", sort=False)),
                       key=lambda item: item[0])  # fmt: skip
        out.append(f"**{activation}**, by the first depth at which an initializer fails more often than at its "
                   f"shallowest (conf/experiment/claims/depth.yaml: one-sided Fisher exact test, p <= {rule.value}, "
                   f"at least {rule.min_seeds} runs per cell; an order of listing, not a tested difference between "
                   "initializers): " + "; ".join(text for _, text in found) + ".")  # fmt: skip
    return out


def draw_depth_figures(summary: pd.DataFrame, figure_dir: Path, group: str) -> None:
    """The three figures of one group (the whole sweep when there is one), titled with the group."""
    figure_dir.mkdir(parents=True, exist_ok=True)
    accuracy_figure(summary, figure_dir / "accuracy_vs_depth.png", group)
    heatmap_figure(
        summary, "acc_mean", "Mean final test accuracy", figure_dir / "accuracy_heatmap.png", ".2f", group
    )
    heatmap_figure(summary, STEPS,
                   f"Optimizer steps to {SPEED}% validation accuracy: Kaplan-Meier median (reached/runs; – = under half)",
                   figure_dir / f"steps_to_{SPEED}_heatmap.png", ".0f", group,
                   annotations=count_annotations(summary, STEPS, REACHED, TOTAL, ".0f", UPPER),
                   colorbar_label="optimizer steps")  # fmt: skip


def depth_results(
    summary: pd.DataFrame,
    folder: Path,
    level: str,
    eps: float | None = None,
    seeds_text: str = "the seeds",
    diagnosed: int = 0,
) -> list[str]:
    """One group's statements, figures and table (the whole sweep's when it has one group). ``seeds_text`` and
    ``diagnosed``: the seeds the step-0 diagnostics average over, in words and counted (0: not recorded)."""
    lines = [
        f"{level} From which depth each initializer fails",
        "",
        *[f"- {s}" for s in statements(summary)],
        "",
        f"![Final test accuracy against depth]({(folder / 'accuracy_vs_depth.png').as_posix()})",
        "",
        f"![Mean final test accuracy]({(folder / 'accuracy_heatmap.png').as_posix()})",
        "",
        f"![Steps to {SPEED}%]({(folder / f'steps_to_{SPEED}_heatmap.png').as_posix()})",
        "",
        *baseline_statement(summary),
        f"{level} Results beside the step-0 diagnostics",
        "",
        "`acc 95% CI`: Student-t interval of the mean test accuracy over the cell's seeds (bimodal where some "
        "seeds fail: read it with `fails`); `fails`: runs that fail to train / runs, with the 95% Clopper-Pearson "
        "interval of the failure probability. "
        "`act last/first`: activation std in the last hidden layer over the first; `grad first/last`: std of the "
        f"back-propagated gradient in the first hidden layer over the last (both at step 0, mean over {seeds_text}); "
        "`corr last`: the correlation (cosine similarity) of two different images' pre-activations at the last "
        f"hidden layer, mean over {PAIRS} image pairs and the seeds: near 1, the network maps every image to the same "
        "direction whatever the activation std says. "
        "`dead/sat.`: the worst layer's share of dead ReLU units or saturated tanh outputs; `weight grad`: the "
        "median over hidden layers of the weight gradients' std at step 0.",
        "",
        *signal_statement(summary, diagnosed),
        *adam_statement(summary, eps),
    ]
    columns = {"activation": "activation", "depth": "depth", "init": "init", "acc_mean": "acc mean",
               "acc_ci": "acc 95% CI", "acc_std": "acc std", "fails": "fails (95% CI)", "n_diverged": "diverged",
               "steps_to": f"steps to {SPEED}% (KM median, reached/runs)", "act_std_last_over_first": "act last/first",
               "grad_std_first_over_last": "grad first/last", "corr_last": "corr last",
               "dead_or_saturated_max": "dead/sat.",
               "weight_grad_std_median": "weight grad", "adam_step_share": "Adam step"}  # fmt: skip
    counted = count_annotations(summary, STEPS, REACHED, TOTAL, ".0f", UPPER)
    shown = summary.assign(
        steps_to=counted.iloc[:, 0],
        acc_ci=[f"[{low:.3f}, {high:.3f}]" if np.isfinite(low) else "–"
                for low, high in zip(summary.acc_ci_low, summary.acc_ci_high, strict=True)],
        fails=[f"{k}/{n} ({low:.0%}-{high:.0%})" for k, n, low, high in
               zip(summary.n_failed_to_train, summary.n_runs, summary.fail_rate_ci_low, summary.fail_rate_ci_high,
                   strict=True)],
    )  # fmt: skip
    shown = shown[[c for c in columns if c in shown.columns]].rename(columns=columns)
    lines.append(markdown_table(shown.map(_cell_text)))
    return lines


def _cell_text(value: object) -> object:
    """Three decimals, or three significant digits where that would print 0.000 (gradients of 1e-36)."""
    if not isinstance(value, float):
        return value
    return f"{value:.2e}" if value != 0 and abs(value) < 1e-3 and math.isfinite(value) else cell(value, 3)


def write_depth_report(
    sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None, link_base: Path | None = None
) -> dict:
    """The depth report; a sweep that also varies other keys gets it per group (its activation and depth are
    laid out along the report's own axes, not split into groups)."""
    diagnostics = None
    if diagnostics_dir is not None and (diagnostics_dir / "diagnostics.csv").is_file():
        diagnostics = pd.read_csv(diagnostics_dir / "diagnostics.csv")
    parts = []
    eps = adam_eps(sweep.config)
    for name, part in split_groups(sweep, laid_out=DEPTH_AXES):
        summary = diagnostics_beside(summarize_depth(part.runs, part.history), diagnostics, eps)
        folder = Path("figures", group_folder(name))
        draw_depth_figures(summary, out_dir / folder, name)
        parts.append((name, summary, folder))
    grouped = len(parts) > 1
    every = pd.concat([with_group_keys(summary, name) for name, summary, _ in parts], ignore_index=True)
    atomic.write_text(out_dir / "summary.csv", every.to_csv(index=False))
    metrics = {name: {f"{r.activation}.depth_{r.depth}.{r.init}": {"test_acc_mean": r.acc_mean, "failed_to_train": r.n_failed_to_train}
                      for r in summary.itertuples(index=False)} for name, summary, _ in parts}  # fmt: skip
    atomic.write_json(out_dir / "metrics.json", metrics if grouped else metrics[""])

    data, trainer, model = (sweep.config.get(k, {}) for k in ("data", "trainer", "model"))
    seeds_text, diagnosed = "the seeds", 0
    if diagnostics is not None and "seeds" in diagnostics and diagnostics.seeds.notna().any():
        diagnosed = int(diagnostics.seeds.max())
        seeds_text = f"the {diagnosed} diagnosed seed{'s' if diagnosed > 1 else ''}"
    epochs = int(trainer.get("max_epochs") or 0)
    critical = (
        ["- `orthogonal_critical`: a random orthogonal matrix times the activation's critical gain "
         f"({', '.join(f'{a} {CRITICAL_GAINS[a]:.4g}' for a in dict.fromkeys(every.activation) if a in CRITICAL_GAINS)}; "
         "`initstudy.nn.gains`): the edge of chaos at zero biases. Orthogonal with gain 1 shrinks a ReLU signal by "
         "1/sqrt(2) per layer, as Glorot's variance does, by design."]
        if "orthogonal_critical" in set(every.init) else []
    )  # fmt: skip
    lines = [
        "# Depth, activation and initialization: report",
        "",
        "Generated by `python -m initstudy.report --runs runs_depth --out reports/depth` (DVC stage `report_depth`).",
        "",
        "## Setup",
        "",
        f"- Networks: 784 -> depth x {model.get('width')} -> 10, depths {sorted(int(d) for d in every.depth.unique())}, "
        f"activations {list(dict.fromkeys(every.activation))}; initializers {list(dict.fromkeys(every.init))}; "
        f"seeds {sorted(int(s) for s in sweep.runs.seed.unique())}.",
        f"- Reduced to fit a 2-core CPU: {data.get('train_size') or 'all 60,000'} training images, "
        f"{epochs} epoch{'s' if epochs != 1 else ''}, batch {data.get('batch_size')}; Adam as in the main study. "
        "Accuracies are therefore lower than the main study's; the comparison across depth is the point.",
        *critical,
        f"- A run *fails to train* when its final test accuracy (evaluated once, after training) is below "
        f"{FAILS_BELOW:.0%} or it diverged.",
        (
            f"- Convergence is measured on the validation split (the last {int(data.get('val_size') or 0):,} "
            f"training images, never trained on): time to {SPEED}% accuracy is interpolated between evaluation passes "
            f"(every {sweep.config.get('module', {}).get('val_every_n_steps')} steps and at every epoch end) and "
            "censored for runs that never get there (Kaplan-Meier median; reached/runs beside every number). A "
            "crossing inside the first evaluation interval is not interpolated (the line from step 0's chance "
            "accuracy would put it just below the first pass whatever the run did): such a run counts as reached "
            "by the first pass, and a median resting on it reads ≤ that step."
            if int(data.get("val_size") or 0)
            else "- No validation split: convergence is measured on the test set (`data.val_size=0`)."
        ),
        "",
    ]
    if grouped:
        lines += [f"Besides init, seed, activation and depth, this sweep varied {', '.join(sorted(set().union(*(parse_group(n) for n, _, _ in parts))))}: "
                  "one section per group below (sorted by name).", ""]  # fmt: skip
        for name, summary, folder in parts:
            title = ", ".join(f"`{k}={v}`" for k, v in parse_group(name).items())
            lines += [
                f"## Group {title}",
                "",
                *depth_results(summary, folder, "###", eps, seeds_text, diagnosed),
                "",
            ]
        lines.pop()
    else:
        lines += depth_results(parts[0][1], parts[0][2], "##", eps, seeds_text, diagnosed)
    if diagnostics_dir is not None and (diagnostics_dir / "statements.json").is_file():
        figures = json.loads((diagnostics_dir / "statements.json").read_text())["figures"]
        lines += ["", "## Signal at step 0 (deepest networks)", ""]
        for caption, name in figures.items():
            lines += [f"![{caption}]({os.path.relpath(diagnostics_dir / name, link_base or out_dir)})", ""]
    atomic.write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {
        f"{name} {r.activation}/{r.depth}/{r.init}"
        if grouped
        else f"{r.activation}/{r.depth}/{r.init}": r.acc_mean
        for name, summary, _ in parts
        for r in summary.itertuples(index=False)
    }
