"""Matplotlib figures; every initializer keeps one colour across all of them (and across reports).

Every figure is written by :func:`save` (PNG bytes that depend only on what is drawn) and returned, closed, so
that tests can inspect what was plotted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

from initstudy.core.style import DPI, colour_map

matplotlib.use("Agg")  # files only; no display on CI or DVC
import matplotlib.pyplot as plt
import matplotlib.ticker
import matplotlib.transforms
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initstudy.report.inference import km_curve
from initstudy.report.papers.claims import NOT_TESTABLE
from initstudy.report.stats import SEED_NOTEBOOK

ZERO_MARK = "v"  # a value of 0 (or below) cannot sit on a log axis: a marker on its bottom edge stands for it


def titled(title: str, group: str, separator: str = ": ") -> str:
    """A figure's title, led by its group in a grouped sweep (figures of different groups look alike otherwise)."""
    return f"{group}{separator}{title}" if group else title


def save(fig: Figure, path: Path) -> Figure:
    """Write ``fig`` as a PNG and close it; returned so tests can read what was drawn.

    PNG carries no timestamp, and dropping the Software tag (it names the matplotlib version) leaves bytes
    that depend only on what is drawn: DVC sees a figure change only when its content does.
    """
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return fig


# Step-level curves: mean over seeds, min-max band, log y with zeros masked and off-scale initializers labelled.

STALLED_RATIO = 0.9  # a curve that ends within 10% of where it started did not train (zeros: 2.30 throughout)


def seed_band(points: pd.DataFrame, by: str = "step") -> pd.DataFrame:
    """Mean over seeds and the min-max range, per ``by`` value (columns x, mean, low, high).

    With five seeds a t-interval is wide and leans on normality; the range shows where every seed lies.
    """
    finite = points[np.isfinite(points.value.astype(float))]
    stats = finite.groupby(by).value.agg(["mean", "min", "max"]).reset_index()
    return stats.rename(columns={by: "x", "min": "low", "max": "high"})


def _bands(history: pd.DataFrame, metric: str, inits: Sequence[str], error: bool = False) -> dict:
    """One seed band per initializer that logged ``metric`` (as 1 - value when ``error``)."""
    out = {}
    for init in inits:
        points = history[(history.init == init) & (history.metric == metric)]
        if error:
            points = points.assign(value=1 - points.value.astype(float))
        if len(points):
            out[init] = seed_band(points)
    return out


def _stalled(band: pd.DataFrame) -> bool:
    """Did not train: its last mean is within 10% of its first, so it need not set the axis limits."""
    mean = band["mean"].to_numpy(dtype=float)
    return len(mean) > 1 and mean[-1] >= STALLED_RATIO * mean[0]


def _positive(values: Iterable[float]) -> np.ndarray:
    """Values for a log axis: zero and negative ones become NaN (a gap), to be marked on the edge instead."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def _log_limits(bands: Iterable[pd.DataFrame], levels: Sequence[float] = ()) -> tuple[float, float] | None:
    """Y limits spanning the positive values of ``bands`` and ``levels``, padded by a quarter (log scale)."""
    parts = [_positive(band[column]) for band in bands for column in ("low", "mean", "high")]
    values = np.concatenate([*parts, _positive(levels)])
    values = values[np.isfinite(values)]
    return (values.min() / 1.25, values.max() * 1.25) if len(values) else None


def _steps_axis(ax: Axes, last_step: float, linear_up_to: float = 100) -> None:
    """Optimizer steps, linear up to the first validation interval (step 0 stays visible), log beyond it:
    the initializers differ most in the first few hundred steps, and the whole run still fits."""
    ax.set_xscale("symlog", linthresh=linear_up_to, linscale=0.4)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlim(0, max(last_step, linear_up_to) * 1.08)


def _mark_zeros(ax: Axes, band: pd.DataFrame, colour: str) -> bool:
    """A marker on the bottom edge wherever the mean or the band's low end is 0 or below (masked above)."""
    at = band.x[(band["mean"] <= 0) | (band.low <= 0)].to_numpy(dtype=float)
    if len(at):
        bottom = ax.get_ylim()[0]
        ax.plot(at, np.full(len(at), bottom), ls="none", marker=ZERO_MARK, ms=6, color=colour, clip_on=False,
                zorder=5)  # fmt: skip
    return bool(len(at))


def _label_off_scale(ax: Axes, bands: dict, colours: dict[str, str]) -> None:
    """An initializer wholly above (or below) the axis is named at that edge with its typical value, rather than
    stretching the axis until the trained curves merge."""
    low, high = ax.get_ylim()
    slot = 0
    for init, band in bands.items():
        values = _positive(band["mean"])
        values = values[np.isfinite(values)]
        if not len(values) or (low <= values.max() and values.min() <= high):
            continue
        above = values.min() > high
        x = 0.6 + 0.14 * slot  # upper middle: the curves fall from the top left
        ax.annotate(f"{init} ≈ {np.median(values):.3g}\n(off scale)", xy=(x, 1.0 if above else 0.0),
                    xycoords="axes fraction", xytext=(x, 0.84 if above else 0.16), textcoords="axes fraction",
                    ha="center", va="center", fontsize=8, color=colours[init],
                    arrowprops={"arrowstyle": "->", "color": colours[init]})  # fmt: skip
        slot += 1


def _log_step_panel(ax: Axes, bands: dict, colours: dict[str, str], levels: Sequence[float] = ()) -> bool:
    """Draw every band on a log y axis whose limits come from the initializers that train; returns whether
    a value of 0 or below had to be masked (and was marked on the bottom edge)."""
    for init, band in bands.items():
        ax.plot(band.x, _positive(band["mean"]), color=colours[init], lw=1.4, label=init)
        ax.fill_between(band.x, _positive(band.low), _positive(band.high), color=colours[init], alpha=0.18,
                        lw=0)  # fmt: skip
    ax.set_yscale("log")
    _steps_axis(ax, max(band.x.max() for band in bands.values()))
    trained = [band for band in bands.values() if not _stalled(band)] or list(bands.values())
    limits = _log_limits(trained, levels)
    if limits:
        ax.set_ylim(*limits)
    masked = [_mark_zeros(ax, band, colours[init]) for init, band in bands.items()]
    _label_off_scale(ax, {init: band for init, band in bands.items() if _stalled(band)}, colours)
    ax.grid(True, which="both", alpha=0.25)
    return any(masked)


def _late_zoom(zoom: Axes, bands: dict, colours: dict[str, str], levels: Sequence[float] = ()) -> None:
    """A linear panel on the last half of training, beside the log one: there the trained initializers lie
    within a few percent of each other, which a log axis over the whole run cannot separate."""
    trained = {init: band for init, band in bands.items() if not _stalled(band)}
    if not trained:
        zoom.axis("off")
        return
    start = max(band.x.max() for band in trained.values()) / 2
    values = []
    for init, band in trained.items():
        late = band[band.x >= start]
        zoom.plot(late.x, late["mean"], color=colours[init], lw=1.2)
        zoom.fill_between(late.x, late.low, late.high, color=colours[init], alpha=0.18, lw=0)
        values += [*late.low, *late.high]
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values):
        pad = max(values.max() - values.min(), abs(values.max()) * 0.01, 1e-9) * 0.08
        zoom.set_ylim(values.min() - pad, values.max() + pad)
        for level in levels:
            if values.min() - pad <= level <= values.max() + pad:
                zoom.axhline(level, ls="--", color="0.25", lw=1)
    zoom.set_title("zoom: last half of training, linear y", fontsize=9)
    zoom.tick_params(labelsize=8)
    zoom.grid(True, alpha=0.25)


def _step_legend(ax: Axes, zeros_masked: bool, extra: Sequence[Line2D] = ()) -> None:
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = [*handles, *extra], [*labels, *(line.get_label() for line in extra)]
    if zeros_masked:
        handles.append(Line2D([], [], ls="none", marker=ZERO_MARK, color="0.3"))
        labels.append("0 (off log scale)")
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="lower left", title="mean; band: min–max over seeds",
                  title_fontsize=8, framealpha=0.9)  # fmt: skip


def _seeds(history: pd.DataFrame, inits: Sequence[str]) -> int:
    counts = history[history.init.isin(inits)].groupby("init").seed.nunique()
    return int(counts.max()) if len(counts) else 0


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9)


def loss_by_step(history: pd.DataFrame, inits: list[str], path: Path, group: str = "") -> Figure:
    """Training loss (``train/loss_step``, 50-step windows) above validation loss (``val/loss_step``, a full
    validation pass every 100 steps and at each epoch end) against optimizer steps, per initializer the mean
    over seeds with a min-max band; log y from the initializers that train, a linear zoom on the last half."""
    colours = colour_map(inits)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.2), width_ratios=[2.2, 1], sharex="col")
    masked = False
    panels = (("train/loss_step", "training loss (mean over 50-step windows)"),
              ("val/loss_step", "validation loss (whole validation split)"))  # fmt: skip
    for (ax, zoom), (metric, ylabel) in zip(axes, panels, strict=True):
        bands = _bands(history, metric, inits)
        if not bands:
            _empty(ax, f"no {metric} in the history")
            zoom.axis("off")
            continue
        masked = _log_step_panel(ax, bands, colours) or masked
        _late_zoom(zoom, bands, colours)
        ax.set_ylabel(f"{ylabel}, log")
        zoom.set_ylabel(ylabel, fontsize=8)
    axes[-1, 0].set_xlabel("optimizer steps (linear to 100, log beyond)")
    axes[-1, 1].set_xlabel("optimizer steps")
    _step_legend(axes[0, 0], masked)
    fig.suptitle(titled(f"Loss against optimizer steps: mean over {_seeds(history, inits)} seeds, "
                        "band = min–max over seeds", group), fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save(fig, path)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def val_error_by_step(
    history: pd.DataFrame,
    inits: list[str],
    path: Path,
    group: str = "",
    thresholds: Sequence[float] = (0.97,),
) -> Figure:
    """Validation error (1 - ``val/acc_step``) against optimizer steps, mean over seeds with a min-max band,
    log y, a dashed line at each threshold's error so the time to it can be read off the curves."""
    colours = colour_map(inits)
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(12, 5), width_ratios=[2.2, 1])
    bands = _bands(history, "val/acc_step", inits, error=True)
    levels = [1 - threshold for threshold in thresholds]
    lines = []
    if bands:
        masked = _log_step_panel(ax, bands, colours, levels)
        on_levels = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
        for threshold, level in zip(thresholds, levels, strict=True):
            ax.axhline(level, ls="--", color="0.25", lw=1)
            ax.text(0.99, level * 1.04, f"{_percent(threshold)} accuracy", transform=on_levels, ha="right",
                    va="bottom", fontsize=8, color="0.25")  # fmt: skip
        if levels:
            lines.append(Line2D([], [], ls="--", color="0.25", lw=1, label="threshold"))
        _late_zoom(zoom, bands, colours, levels)
        _step_legend(ax, masked, lines)
    else:
        _empty(ax, "no val/acc_step in the history")
        zoom.axis("off")
    ax.set(
        xlabel="optimizer steps (linear to 100, log beyond)", ylabel="validation error (1 - accuracy), log"
    )
    zoom.set(xlabel="optimizer steps", ylabel="validation error (1 - accuracy)")
    fig.suptitle(titled(f"Validation error against optimizer steps: mean over {_seeds(history, inits)} seeds, "
                        "band = min–max over seeds", group), fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save(fig, path)


# Time to a threshold: right-censored, so Kaplan-Meier rather than a median of the runs that got there.


def _fraction_at(curve: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """The step function's value at ``times`` (right-continuous: a drop at t applies at t)."""
    corners = curve.time.to_numpy()
    return curve.survival.to_numpy()[np.searchsorted(corners, times, side="right") - 1]


def time_to_threshold(
    times_frame: pd.DataFrame, path: Path, threshold_label: str = "97%", group: str = ""
) -> Figure:
    """Kaplan-Meier curves: per initializer, the fraction of runs not yet at the threshold against optimizer
    steps; a run that never got there counts until its last step (a '+'), not as missing or as reached."""
    frame = times_frame.dropna(subset=["steps"])
    inits = list(dict.fromkeys(frame.init))
    colours = colour_map(inits)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for init in inits:
        runs = frame[frame.init == init]
        steps = runs.steps.to_numpy(dtype=float)
        reached = runs.reached.map(_flag).to_numpy(dtype=bool)
        curve = km_curve(steps, reached)  # starts at (0, 1) and runs to the last observed step
        ax.step(curve.time, curve.survival, where="post", lw=1.7,
                color=colours[init], label=f"{init} (reached {int(reached.sum())}/{len(reached)})")  # fmt: skip
        censored = steps[~reached]
        if len(censored):
            ax.plot(censored, _fraction_at(curve, censored), ls="none", marker="+", ms=11, mew=1.6,
                    color=colours[init])  # fmt: skip
    if inits:
        _steps_axis(ax, float(frame.steps.max()))
        censor_note = Line2D([], [], ls="none", marker="+", ms=9, mew=1.5, color="0.3")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend([*handles, censor_note], [*labels, "never reached: censored at its last step"], fontsize=8,
                  loc="lower left", framealpha=0.9)  # fmt: skip
    else:
        _empty(ax, "no runs")
    ax.set_ylim(-0.03, 1.05)
    ax.set(xlabel="optimizer steps (linear to 100, log beyond; interpolated between validation passes)",
           ylabel=f"fraction of runs not yet at\n{threshold_label} validation accuracy")  # fmt: skip
    ax.set_title(titled(f"Time to {threshold_label} validation accuracy (Kaplan–Meier)", group), fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return save(fig, path)


# Forest plot of the pairwise comparisons.


def _flag(value: object) -> bool:
    """True only for a true value: NaN (a missing flag in a CSV) must not read as true."""
    return bool(pd.notna(value) and value)


def _in_percentage_points(endpoint: str, rows: pd.DataFrame) -> bool:
    """Accuracy differences read in percentage points. Margins are set for accuracy endpoints only; a name
    that counts steps to an accuracy is a count, not an accuracy."""
    if "margin" in rows and rows.margin.notna().any():
        return True
    name = endpoint.lower()
    return "accuracy" in name and not name.startswith(("steps", "time", "epochs"))


def _verdict(row: pd.Series) -> str:
    """The pair's label: "not testable at this budget" when it has fewer seeds than the claims file's rule
    needs (initstudy.report.study_rules.judge_differences), else its equivalence verdict where it has a margin,
    else the rule's "differs" or "not shown to differ" (significance alone for frames judged by no rule)."""
    judged = row.get("difference_verdict")
    if judged == NOT_TESTABLE:
        return NOT_TESTABLE
    verdict = row.get("verdict")
    if isinstance(verdict, str) and verdict.strip():
        return verdict.strip()
    if isinstance(judged, str) and judged:
        return judged
    return "significant" if _flag(row.get("significant")) else "not significant"


def _forest_panel(ax: Axes, endpoint: str, rows: pd.DataFrame) -> None:
    """One endpoint: a row per pair, the difference with its CI, the ±margin band where there is one."""
    scale = 100.0 if _in_percentage_points(endpoint, rows) else 1.0
    at_right = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
    labels = []
    for position, (_, row) in enumerate(rows.iterrows()):
        y = len(rows) - 1 - position  # first row on top
        margin = row.get("margin", math.nan)
        if pd.notna(margin):
            ax.fill_betweenx(
                [y - 0.38, y + 0.38], -margin * scale, margin * scale, color="0.86", lw=0, zorder=0
            )
        centre = row.diff_mean * scale
        low, high = row.diff_ci_low * scale, row.diff_ci_high * scale
        xerr = None if math.isnan(low) or math.isnan(high) else [[centre - low], [high - centre]]
        filled = _flag(row.get("equivalent"))
        ax.errorbar(centre, y, xerr=xerr, fmt="o", ms=6, capsize=3, color="black", mec="black",
                    mfc="black" if filled else "white", zorder=3)  # fmt: skip
        ax.text(1.02, y, _verdict(row), transform=at_right, va="center", fontsize=8)
        design = "Welch" if str(row.get("design", "")).lower() == "welch" else str(row.get("design", ""))
        labels.insert(0, f"{row.init_a} − {row.init_b}" + (f" ({design})" if design else ""))
    ax.axvline(0, color="0.3", lw=1, zorder=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_title(endpoint, loc="left", fontsize=9)
    ax.set_xlabel("A − B, percentage points" if scale == 100 else "A − B", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, axis="x", alpha=0.25)


def _footnote(untestable: pd.DataFrame, width: int = 150) -> str:
    """The pairs left out, each kept whole on one line (a test looks them up by name)."""
    items = [
        f"{row.endpoint}: {row.init_a} − {row.init_b} ({row.degenerate})" for row in untestable.itertuples()
    ]
    if not items:
        return ""
    lines = [items[0]]
    for item in items[1:]:
        if len(lines[-1]) + len(item) + 2 > width:
            lines[-1] += ";"
            lines.append(item)
        else:
            lines[-1] += f"; {item}"
    return "\n".join(["Left out, no test possible:", *lines])


def forest_plot(comparisons: pd.DataFrame, path: Path, group: str = "") -> Figure:
    """One panel per endpoint (their units differ), one row per testable pair: A - B with its CI, 0 marked,
    the equivalence margin shaded where the endpoint has one; filled marker = equivalent within the margin.
    Degenerate pairs (nothing to test, e.g. a constant against a sample) are listed in a footnote instead."""
    reason = comparisons.get("degenerate", pd.Series("", index=comparisons.index)).fillna("").astype(str)
    testable = comparisons[reason.str.strip() == ""]
    footnote = _footnote(comparisons[reason.str.strip() != ""])
    endpoints = list(dict.fromkeys(testable.get("endpoint", [])))
    heights = [(testable.endpoint == endpoint).sum() + 1.6 for endpoint in endpoints] or [2.0]
    foot_height = 0.16 * (footnote.count("\n") + 1) + 0.1 if footnote else 0.0
    fig_height = 0.3 * sum(heights) + 0.45 * len(heights) + 0.7 + foot_height
    fig, axes = plt.subplots(len(heights), 1, figsize=(9, fig_height), height_ratios=heights, squeeze=False)
    for ax, endpoint in zip(axes[:, 0], endpoints, strict=False):
        _forest_panel(ax, endpoint, testable[testable.endpoint == endpoint])
    if not endpoints:
        axes[0, 0].axis("off")
        _empty(axes[0, 0], "no testable comparisons")
    if footnote:
        fig.text(0.01, 0.01, footnote, fontsize=7, ha="left", va="bottom")
    fig.suptitle(titled("Differences A − B with their confidence intervals; filled: equivalent within the "
                        "margin (shaded)", group), fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, foot_height / fig_height, 1, 1))
    return save(fig, path)


# The final test error.


def _error_interval(row: pd.Series) -> tuple[float, float, float]:
    """Mean test error and its CI from the summary's accuracy columns (a point when the CI is missing)."""
    low = row.acc_ci95_low if not math.isnan(row.acc_ci95_low) else row.acc_mean
    high = row.acc_ci95_high if not math.isnan(row.acc_ci95_high) else row.acc_mean
    return 1 - row.acc_mean, 1 - high, 1 - low


def final_accuracy(runs: pd.DataFrame, summary: pd.DataFrame, path: Path, group: str = "") -> Figure:
    """Final test error per initializer, every seed a dot, mean with 95% CI, the seed notebook as a cross.

    Left: every initializer on a log scale (a constant predictor's 89% and a trained net's 2% are 40x apart,
    which on a linear axis flattens the trained ones into a line). Right: a linear zoom on the initializers
    that train, where their differences are visible. Test data is evaluated once, after training.
    """
    inits = list(summary.init)
    colours = colour_map(inits)
    trained = [init for init in inits if summary.set_index("init").acc_mean.get(init, 0) > 0.5]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(inits)), 4.4), width_ratios=[1, 1.3])
    jitter = np.random.default_rng(0)
    zeros_at: dict[str, list[float]] = {}
    for ax, names, log in ((axes[0], inits, True), (axes[1], trained, False)):
        for position, init in enumerate(names):
            done = runs[(runs.init == init) & (runs.status == "complete")]
            errors = 1 - done["test/acc"].astype(float).to_numpy()
            xs = position + jitter.uniform(-0.12, 0.12, size=len(errors))
            ax.scatter(
                xs, _positive(errors) if log else errors, color=colours[init], s=22, alpha=0.85, zorder=3
            )
            if log and (errors <= 0).any():
                zeros_at[init] = list(xs[errors <= 0])
            row = summary[summary.init == init].iloc[0]
            if not math.isnan(row.acc_mean):
                centre, low, high = _error_interval(row)
                if log and low <= 0:
                    low = centre  # the interval reaches 0 error: only its upper end has a place on a log axis
                ax.errorbar(position + 0.28, centre, yerr=[[centre - low], [high - centre]], fmt="s",
                            color="black", ms=4, capsize=3, zorder=4)  # fmt: skip
            if init in SEED_NOTEBOOK:
                ax.scatter(
                    position - 0.28, 1 - SEED_NOTEBOOK[init], marker="x", color="black", s=40, zorder=4
                )
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.grid(True, which="both", axis="y", alpha=0.3)
    axes[0].set(
        yscale="log", ylabel="test error (evaluated once, after training), log", title="all initializers"
    )
    axes[1].set(ylabel="test error (evaluated once, after training)",
                title="zoom: initializers above 50% accuracy (linear)")  # fmt: skip
    if zeros_at:
        bottom = axes[0].set_ylim(axes[0].get_ylim())[0]  # frozen: the marks must not move the edge
        for init, xs in zeros_at.items():
            axes[0].plot(
                xs, [bottom] * len(xs), ls="none", marker=ZERO_MARK, color=colours[init], clip_on=False
            )
        axes[0].text(0.01, 0.01, "▼ = 0 (off log scale)", transform=axes[0].transAxes, fontsize=7)
    fig.suptitle(
        titled("Final test error: dots = seeds, square = mean ± 95% CI, x = seed notebook", group),
        fontsize=10,
    )
    fig.tight_layout()
    return save(fig, path)
