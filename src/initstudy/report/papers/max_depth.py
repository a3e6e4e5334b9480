"""The maximum trainable depth per weight variance sigma_w^2 (Schoenholz et al. 2017: a tanh network trains up
to about 6 xi_c, the mean-field depth scale): per sigma_w^2, the deepest depth of the grid whose cell trains (a
majority of its seeds reach the accuracy threshold), censored where that is the deepest depth measured (a lower
bound). The grid brackets each uncensored maximum between that depth and the next, failing one; the constant c
of L_max = c xi_c is fitted by least squares on log scale over the uncensored sigma_w^2 to the brackets'
log-midpoints, and its interval runs from the bootstrap's lower percentile of the fit to the deepest depths
that train to its upper percentile of the fit to the next depths (the seeds resampled within each cell): the
seeds' spread and the grid's resolution both. The two claims read from it (the constant against the paper's 6,
the peak against the order/chaos boundary) and its figure (tables/max_depth.csv, figures/max_depth.png in the
Schoenholz report).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from initstudy.report.figures import save
from initstudy.report.papers.claims import AGREES, INCONCLUSIVE, PARTS, Claim
from initstudy.report.papers.rules import Rule, claims_path, judged, stated

TRAINS = 0.5  # final test accuracy at or above this: the run trained (chance is 0.1)
RESAMPLES = 2000  # bootstrap resamples of the seeds within each cell
RNG_SEED = 0  # the bootstrap's generator: the same runs give the same interval, byte for byte
LEVEL = 0.95  # the interval's coverage
FIT_MIN = 2  # fewest uncensored sigma_w^2 the constant c is judged on (the rule: inconclusive with fewer)
PAPER = "schoenholz2017"
DEPTH_SCALES = (
    6.0  # the paper's bound, 6 xi_c, as drawn and tabled (the rule's own value decides the verdict)
)


def majority(passed: np.ndarray) -> np.ndarray:
    """Whether a cell trains, from its seeds' outcomes along the last axis: more than half of them passed."""
    return np.asarray(passed, dtype=float).mean(axis=-1) > 0.5


def deepest(depths: np.ndarray, trains: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For depths in ascending order and whether each trains (last axis): the deepest depth that trains (NaN
    where none does), the next depth measured above it (it fails; the shallowest where none trains, NaN where
    the deepest trains), whether the deepest depth measured trains (censored: a lower bound) and whether no
    depth trains (below the grid: the maximum lies under the shallowest depth)."""
    trains = np.asarray(trains, dtype=bool)
    depths = np.asarray(depths, dtype=float)
    top = np.where(trains, depths, -np.inf).max(axis=-1)
    above = np.where(depths > top[..., None], depths, np.inf).min(axis=-1)
    below = ~trains.any(axis=-1)
    return np.where(below, np.nan, top), np.where(np.isinf(above), np.nan, above), trains[..., -1], below


def fit_c(max_depth: np.ndarray, xi_c: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """c of L_max = c xi_c, least squares on log scale over the usable sigma_w^2 (last axis): the geometric mean
    of L_max / xi_c; NaN where none is usable."""
    usable = np.asarray(usable, dtype=bool)
    ratio = np.log(np.where(usable, max_depth, 1.0) / np.asarray(xi_c, dtype=float))
    count = usable.sum(axis=-1)
    total = np.where(usable, ratio, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.exp(total / np.maximum(count, 1)), np.nan)


def passed_per_cell(cells: pd.DataFrame) -> dict[tuple[float, int], np.ndarray]:
    """(sigma_w^2, depth) -> whether each of the cell's seeds passed the threshold (the passing ones first: a
    resample depends only on how many did). ``cells``: one row per cell with sigma_w2, depth, n_seeds, n_passed."""
    return {(float(r.sigma_w2), int(r.depth)): np.arange(int(r.n_seeds)) < int(r.n_passed)
            for r in cells.sort_values(["sigma_w2", "depth"]).itertuples()}  # fmt: skip


def table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per sigma_w^2 of ``cells`` (sigma_w2, depth, n_seeds, n_passed, xi_c per cell): xi_c, 6 xi_c, the
    maximum trainable depth, the next depth measured (it fails) and their log-midpoint, whether the maximum is
    censored (a lower bound) or below the grid, whether it enters the fit (uncensored), the depths measured and
    the fewest seeds in a cell."""
    if cells.empty:
        return pd.DataFrame()
    passed = passed_per_cell(cells)
    xi = cells.groupby("sigma_w2").xi_c.first()
    rows = []
    for scale in sorted({s for s, _ in passed}):
        depths = sorted(d for s, d in passed if s == scale)
        top, above, censored, below = deepest(np.array(depths), [majority(passed[scale, d]) for d in depths])
        usable = not censored and not below
        rows.append({"sigma_w2": scale, "xi_c": float(xi[scale]), "bound_6_xi_c": DEPTH_SCALES * float(xi[scale]),
                     "max_depth": float(top), "next_depth": float(above),
                     "midpoint": float(np.sqrt(top * above)) if usable else math.nan,
                     "censored": bool(censored), "below_grid": bool(below), "in_fit": usable,
                     "shallowest_measured": depths[0], "deepest_measured": depths[-1],
                     "seeds": min(len(passed[scale, d]) for d in depths)})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Fit:
    """c of L_max = c xi_c (fitted to the brackets' log-midpoints), its interval, how many resamples gave a c
    and how many sigma_w^2 are uncensored (NaN: none)."""

    c: float
    low: float
    high: float
    used: int
    uncensored: int


def fit(cells: pd.DataFrame, per_sigma: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = RNG_SEED,
        level: float = LEVEL) -> Fit:  # fmt: skip
    """The fit over ``per_sigma`` (:func:`table` of ``cells``) and its interval: each resample draws each cell's
    seeds with replacement (cells in sorted order, one generator seeded with ``seed``), recomputes every
    sigma_w^2's maximum trainable depth, next depth and censoring, and fits c over that resample's uncensored
    sigma_w^2 to the deepest depths that train (the lower end) and to the next depths (the upper end); the
    interval is the lower end's lower percentile to the upper end's upper percentile."""
    if per_sigma.empty:
        return Fit(math.nan, math.nan, math.nan, 0, 0)
    xi = per_sigma.xi_c.to_numpy()
    c = float(fit_c(per_sigma.midpoint.to_numpy(), xi, per_sigma.in_fit.to_numpy()))
    rng = np.random.default_rng(seed)
    outcomes = passed_per_cell(cells)
    tops, aboves, usable = [], [], []
    for scale in per_sigma.sigma_w2:
        depths = sorted(d for s, d in outcomes if s == scale)
        trains = []
        for depth in depths:
            passed = outcomes[scale, depth]
            trains.append(majority(passed[rng.integers(0, len(passed), size=(resamples, len(passed)))]))
        top, above, censored, below = deepest(np.array(depths), np.stack(trains, axis=-1))
        tops.append(top)
        aboves.append(above)
        usable.append(~censored & ~below)
    ok = np.stack(usable, axis=-1)
    lower = fit_c(np.stack(tops, axis=-1), xi, ok)
    upper = fit_c(np.stack(aboves, axis=-1), xi, ok)
    defined = np.isfinite(lower) & np.isfinite(upper)
    tail = 100 * (1 - level) / 2
    if not defined.any():
        return Fit(c, math.nan, math.nan, 0, int(per_sigma.in_fit.sum()))
    low, high = float(np.percentile(lower[defined], tail)), float(np.percentile(upper[defined], 100 - tail))
    return Fit(c, low, high, int(defined.sum()), int(per_sigma.in_fit.sum()))


def summary(per_sigma: pd.DataFrame, result: Fit) -> list[str]:
    """The report's lines on the maximum trainable depth: how it is read and the fit, every number computed."""
    if per_sigma.empty:
        return ["No complete runs."]
    lines = [f"Per σ_w², the deepest depth of the grid whose cell trains (a majority of its seeds reach test "
             f"accuracy {TRAINS}); *censored*: the deepest depth measured trains, so the maximum is a lower bound; "
             "*below_grid*: no depth trains. Each uncensored maximum lies between that depth and the next "
             "(failing) one, *next_depth*. c of L_max = c ξ_c is fitted by least squares on log scale to the "
             f"log-midpoints (*midpoint*) over the {result.uncensored} uncensored σ_w² ({FIT_MIN} needed for a "
             f"verdict); its {LEVEL:.0%} interval runs from the lower percentile of the fit to the deepest depths "
             "that train to the upper percentile of the fit to the next depths, over "
             f"{RESAMPLES} bootstrap resamples of the seeds within each cell (generator seed {RNG_SEED}), so it "
             "holds the grid's resolution as well as the seeds' spread. `tables/max_depth.csv` holds the "
             "table."]  # fmt: skip
    if math.isfinite(result.c):
        lines += ["", f"c = {result.c:.2f}, {LEVEL:.0%} interval [{result.low:.2f}, {result.high:.2f}] "
                      f"({result.used} of {RESAMPLES} resamples with an uncensored σ_w²)."]  # fmt: skip
    return lines


def metrics(per_sigma: pd.DataFrame, result: Fit) -> dict[str, object]:
    """metrics.json's entry: c, its interval and per sigma_w^2 the maximum trainable depth and its censoring."""
    key = "sigma_w2_{:g}".format
    return {"c": result.c, "c_low": result.low, "c_high": result.high, "uncensored": result.uncensored,
            "depth": {key(r.sigma_w2): r.max_depth for r in per_sigma.itertuples()},
            "censored": {key(r.sigma_w2): r.censored for r in per_sigma.itertuples()}}  # fmt: skip


def bracket(row: object) -> str:
    """Where a sigma_w^2's maximum trainable depth lies: between the deepest depth that trains and the next,
    at least the deepest measured (censored), or below the shallowest."""
    if row.below_grid:
        return f"< {row.shallowest_measured:.0f}"
    if row.censored:
        return f">= {row.max_depth:.0f}"
    return f"{row.max_depth:.0f}-{row.next_depth:.0f}"


def constant_claim(rule: Rule, per_sigma: pd.DataFrame, result: Fit) -> Claim:
    """L_max = c xi_c with c = the rule's value (6): agrees if the interval holds it, parts if it excludes it,
    inconclusive with fewer than two uncensored sigma_w^2. Baseline: a constant L_max (the geometric mean of the
    midpoints), its RMS log10 residual beside the fit's."""
    value = stated(rule, claims_path(PAPER))
    if per_sigma.empty:
        return judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no complete runs")
    seeds = int(per_sigma.seeds.min())
    used = per_sigma[per_sigma.in_fit]
    listed = ", ".join(
        f"σw²={r.sigma_w2:g}: {bracket(r)} (6ξc={r.bound_6_xi_c:.0f})" for r in per_sigma.itertuples()
    )
    if result.uncensored < FIT_MIN or not math.isfinite(result.low):
        return judged(rule, ours=f"maximum trainable depth {listed}", seeds=seeds, outcome=INCONCLUSIVE,
                      baseline="–", seeds_note="per cell",
                      why=f"{result.uncensored} uncensored sigma_w^2 where the fit needs {FIT_MIN}")  # fmt: skip
    logs = np.log10(used.midpoint.to_numpy())
    fitted = np.log10(result.c * used.xi_c.to_numpy())
    rms_fit, rms_flat = (float(np.sqrt(np.mean(r**2))) for r in (logs - fitted, logs - logs.mean()))
    inside = result.low <= value <= result.high
    return judged(
        rule, seeds=seeds, outcome=AGREES if inside else PARTS, seeds_note="per cell",
        ours=f"c = {result.c:.2f}, {LEVEL:.0%} interval [{result.low:.2f}, {result.high:.2f}] "
             f"({result.used} of {RESAMPLES} resamples with a fit) over {result.uncensored} uncensored sigma_w^2; "
             f"maximum trainable depth {listed}",
        baseline=f"RMS log10 residual {rms_flat:.2f} against c xi_c's {rms_fit:.2f} over the same midpoints",
        why="" if inside else f"the interval excludes {value:g}")  # fmt: skip


def peak_claim(rule: Rule, per_sigma: pd.DataFrame, critical: float) -> Claim:
    """The deepest trainable depth peaks at the sigma_w^2 of the grid nearest chi_1 = 1: agrees if it trains
    deeper than every other, parts if another trains deeper, inconclusive on a tie (at the grid's deepest
    depth, a tie of lower bounds)."""
    if per_sigma.empty:
        return judged(rule, ours="–", seeds=0, outcome=None, baseline="–", why="no complete runs")
    seeds = int(per_sigma.seeds.min())
    depth = per_sigma.max_depth.fillna(-np.inf).to_numpy()
    scales = per_sigma.sigma_w2.to_numpy()
    nearest = int(np.argmin(np.abs(scales - critical)))
    others = np.delete(depth, nearest)
    listed = ", ".join(f"{s:g}: " + ("none" if math.isinf(d) else f"{'>= ' if c else ''}{d:.0f}")
                       for s, d, c in zip(scales, depth, per_sigma.censored, strict=True))  # fmt: skip
    ours = f"deepest trained depth per sigma_w^2: {listed}; nearest chi_1 = 1: σw²={scales[nearest]:g}"
    tied = per_sigma[per_sigma.censored]
    baseline = f"{len(tied)} of {len(per_sigma)} sigma_w^2 train at their deepest depth"
    if not len(others):
        return judged(rule, ours=ours, seeds=seeds, outcome=INCONCLUSIVE, baseline=baseline, seeds_note="per cell",
                      why="one sigma_w^2: no other to compare")  # fmt: skip
    if others.max() > depth[nearest]:
        outcome, why = PARTS, "another sigma_w^2 trains deeper than the one nearest the boundary"
    elif others.max() == depth[nearest]:
        censored = bool(per_sigma.censored.iloc[nearest])
        outcome, why = (
            INCONCLUSIVE,
            "tied at the peak" + (" (lower bounds: the grid's deepest depth)" if censored else ""),
        )
    else:
        outcome, why = AGREES, ""
    return judged(
        rule, ours=ours, seeds=seeds, outcome=outcome, baseline=baseline, seeds_note="per cell", why=why
    )


def figure(per_sigma: pd.DataFrame, result: Fit, xi_of: Callable[[float], float], critical: float,
           path: Path) -> None:  # fmt: skip
    """The maximum trainable depth against sigma_w^2 (circles at the log-midpoints, bars to the grid depths that
    bracket it; upward triangles: lower bounds at the deepest depth measured; downward: no depth trains), the
    6 xi_c curve and the fitted c xi_c with its interval as a band, log y."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    low_s, high_s = float(per_sigma.sigma_w2.min()), float(per_sigma.sigma_w2.max())
    grid = np.linspace(low_s - 0.1 * (high_s - low_s + 1), high_s + 0.1 * (high_s - low_s + 1), 400)
    xi = np.array([xi_of(float(s)) for s in grid])
    ax.plot(grid, DEPTH_SCALES * xi, color="#D55E00", linestyle="--", zorder=2, label="6 ξ_c (paper)")
    if math.isfinite(result.c):
        ax.plot(grid, result.c * xi, color="#0072B2", label=f"fit c ξ_c, c = {result.c:.2f}")
        if math.isfinite(result.low):
            ax.fill_between(grid, result.low * xi, result.high * xi, color="#0072B2", alpha=0.2,
                            label=f"{LEVEL:.0%} interval of c (seeds and grid)")  # fmt: skip
    shallowest = float(per_sigma.shallowest_measured.min())
    fitted = per_sigma[per_sigma.in_fit]
    if len(fitted):  # the bracket from the deepest depth that trains to the next, the log-midpoint marked
        ax.errorbar(fitted.sigma_w2, fitted.midpoint, fmt="o", color="black", capsize=3, zorder=3,
                    yerr=[fitted.midpoint - fitted.max_depth, fitted.next_depth - fitted.midpoint],
                    label="maximum trainable depth (between the grid depths)")  # fmt: skip
    for mask, marker, label in [(per_sigma.censored, "^", "lower bound (the deepest depth trains)"),
                                (per_sigma.below_grid, "v", "no depth trains (below the shallowest)")]:  # fmt: skip
        rows = per_sigma[mask]
        if len(rows):
            y = rows.max_depth.where(~rows.below_grid, rows.shallowest_measured)
            ax.scatter(rows.sigma_w2, y, marker=marker, s=60, color="black", zorder=3, label=label)
    if math.isfinite(critical):
        ax.axvline(
            critical, color="#444444", linestyle="--", linewidth=1, label=f"χ₁ = 1 (σ_w² = {critical:.2f})"
        )
    top = float(per_sigma.deepest_measured.max())
    ax.axhline(
        top, color="#999999", linestyle=":", linewidth=1, label=f"deepest depth of the grid ({top:.0f})"
    )
    ax.set(yscale="log", xlabel="σ_w² (weight variance x fan-in)", ylabel="maximum trainable depth",
           ylim=(max(1.0, shallowest / 3), top * 30), title="Maximum trainable depth against 6 ξ_c")  # fmt: skip
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save(fig, path)
