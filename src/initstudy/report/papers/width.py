"""Width as a factor of the eps question (conf/experiment/width.yaml): two boundary cells of the depth sweep at
widths 128, 256 and 1,000, under torch's Adam at eps 1e-7 and at eps 1e-12, ten seeds each.

With fan-in scaling a weight's gradient shrinks about as 1/sqrt(width), so a wider network sits nearer eps;
with a fixed std (random_normal, 0.01) the per-layer gain grows as sqrt(width) instead, and the signal
survives deeper. Two tests per width and per cell, their rules in conf/experiment/claims/width.yaml: does eps
matter at this width (paired exact McNemar, eps 1e-7 against 1e-12, over both cells' seeds), and does going
from the narrowest to the widest network change a cell's failures at eps 1e-7 (two-sided Fisher exact test).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from scipy import stats

from initstudy.report.depth import FAILS_BELOW
from initstudy.report.figures import save
from initstudy.report.load import SweepRuns
from initstudy.report.papers.arms import (
    arm_summary,
    discordant_p,
    paired,
    paired_difference,
    run_table,
    scientific,
)
from initstudy.report.papers.claims import AGREES, PARTS, Claim, PaperReport
from initstudy.report.papers.rules import Rule, judged, stated_values
from initstudy.report.tables import markdown_table

NAME = "width"
SMALL_EPS, LARGE_EPS = "adam_eps1e-12", "adam_eps1e-7"
EPS_MATTERS = "eps_matters_at_width"  # one claim per width: <id>_<width>
WIDTH_MOVES = "width_moves_failures"  # one claim per cell: <id>_<cell>
COLOURS = {LARGE_EPS: "#0072B2", SMALL_EPS: "#009E73"}


def rules(root: Path | None = None) -> dict[str, Rule]:
    """The two rule templates (eps_matters_at_width, width_moves_failures), each present and its level stated."""
    return stated_values(NAME, (EPS_MATTERS, WIDTH_MOVES), root, below=1)


def eps_by_width(table: pd.DataFrame, rule: Rule) -> tuple[list[Claim], list[dict]]:
    """Per width, over both cells' seeds paired: fewer failures at eps 1e-12 than at 1e-7 (one-sided McNemar)."""
    claims, rows = [], []
    for width, mine in table.groupby("width", sort=True):
        only_large, only_small, pairs = paired(mine, SMALL_EPS, LARGE_EPS, ["cell"])
        p = discordant_p(only_large, only_small) if pairs else math.nan
        outcome = None if math.isnan(p) else (AGREES if p <= float(rule.value) else PARTS)
        diff, low, high = paired_difference(only_large, only_small, pairs)
        seeds = int(mine.groupby(["cell", "arm"]).seed.nunique().min())
        rows.append({"width": int(width), "pairs": pairs, "only_eps1e-7_fails": only_large,
                     "only_eps1e-12_fails": only_small, "p_one_sided": p, "fail_rate_difference": diff,
                     "difference_ci_low": low, "difference_ci_high": high})  # fmt: skip
        ours = (f"width {int(width)}: {pairs} pairs, {only_large} fail only at eps 1e-7, {only_small} only at 1e-12; "
                f"p = {p:.3g}; failure rate difference {diff:+.3f} [{low:+.3f}, {high:+.3f}]")  # fmt: skip
        claims.append(judged(rule, ours=ours, seeds=seeds, outcome=outcome,
                             baseline=f"{only_large + only_small} discordant pairs, split evenly under no effect",
                             paper=f"{rule.paper} (width {int(width)})", seeds_note="seeds 0-9 per cell"))  # fmt: skip
        claims[-1].claim = f"{rule.claim} {int(width)}"
    return claims, rows


def width_by_cell(table: pd.DataFrame, rule: Rule) -> tuple[list[Claim], list[dict]]:
    """Per cell, at eps 1e-7: the narrowest against the widest network's failures (two-sided Fisher exact)."""
    claims, rows = [], []
    large = table[table.arm == LARGE_EPS]
    for cell, mine in large.groupby("cell", sort=True):
        narrow, wide = mine[mine.width == mine.width.min()], mine[mine.width == mine.width.max()]
        counts = [[int(narrow.failed.sum()), len(narrow) - int(narrow.failed.sum())],
                  [int(wide.failed.sum()), len(wide) - int(wide.failed.sum())]]  # fmt: skip
        p = float(stats.fisher_exact(counts).pvalue) if len(narrow) and len(wide) else math.nan
        outcome = None if math.isnan(p) else (AGREES if p <= float(rule.value) else PARTS)
        seeds = min(narrow.seed.nunique(), wide.seed.nunique())
        rows.append({"cell": cell, "narrow": int(mine.width.min()), "wide": int(mine.width.max()),
                     "narrow_failed": counts[0][0], "narrow_runs": len(narrow), "wide_failed": counts[1][0],
                     "wide_runs": len(wide), "p_two_sided": p})  # fmt: skip
        ours = (f"{cell}, eps 1e-7: width {int(mine.width.min())} fails {counts[0][0]}/{len(narrow)}, width "
                f"{int(mine.width.max())} fails {counts[1][0]}/{len(wide)}; Fisher p = {p:.3g}")  # fmt: skip
        claims.append(judged(rule, ours=ours, seeds=int(seeds), outcome=outcome,
                             baseline="width changes nothing (the same failure rate)",
                             paper=f"{rule.paper} ({cell})", seeds_note="seeds 0-9 per width"))  # fmt: skip
        claims[-1].claim = f"{rule.claim}: {cell}"
    return claims, rows


def conclusion(eps_claims: list[Claim], width_claims: list[Claim]) -> list[str]:
    """Whether width changes a verdict, in words fixed before the runs are read: the eps verdict is read at each
    width (the claim's name ends with its width), and width's own effect at eps 1e-7 per cell."""
    by_width = {claim.claim.rsplit(" ", 1)[1]: claim.verdict for claim in eps_claims}
    listed = "; ".join(f"width {w}: {v}" for w, v in by_width.items())
    if len(set(by_width.values())) > 1:
        eps = f"Width changes the eps verdict ({listed}): the eps experiment's answer at width 128 does not carry over."
    else:
        eps = f"Width does not change the eps verdict ({listed})."
    moved = [claim.claim.split(": ", 1)[1] for claim in width_claims if claim.verdict == AGREES]
    cells = (f"At eps 1e-7 width moves the failures in {', '.join(moved)}." if moved
             else "At eps 1e-7 width moves the failures in no cell significantly.")  # fmt: skip
    return ["## What width changes", "", "Read from the verdicts above (`initstudy.report.papers.width.conclusion`):",
            "", f"- {eps}", f"- {cells}"]  # fmt: skip


def figure(summary: pd.DataFrame, path: Path) -> None:
    """Per cell: failure rate with its 95% interval against width, one line per eps."""
    cells = list(dict.fromkeys(summary.cell))
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(3.4 * max(1, len(cells)), 3.2), squeeze=False)
    for ax, cell in zip(axes[0], cells, strict=False):
        for arm, colour in COLOURS.items():
            mine = summary[(summary.cell == cell) & (summary.arm == arm)].sort_values("width")
            rate = mine.n_failed / mine.n_runs
            ax.errorbar(mine.width, rate, yerr=[rate - mine.fail_ci_low, mine.fail_ci_high - rate], color=colour,
                        marker="o", capsize=3, label=arm)  # fmt: skip
        ax.set(xscale="log", title=cell, xlabel="width", ylim=(-0.05, 1.05))
        ax.set_xticks(sorted(summary.width.unique()), [str(w) for w in sorted(summary.width.unique())])
        ax.title.set_fontsize(8)
    axes[0][0].set_ylabel(f"P(fail: test acc < {FAILS_BELOW:.0%})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    found = rules()
    table = run_table(sweep.runs, int(sweep.config.get("model", {}).get("width") or 0))
    summary = arm_summary(table, ["cell", "width", "arm"])
    eps_claims, eps_rows = eps_by_width(table, found[EPS_MATTERS])
    width_claims, width_rows = width_by_cell(table, found[WIDTH_MOVES])
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figure(summary, out_dir / "figures" / "failures_by_width.png")
    config, data = sweep.config, sweep.config.get("data", {})
    setup = [
        "Does width change the eps verdict (reports/epsilon)? Two boundary cells of the depth sweep at three "
        "widths under torch's Adam at eps 1e-7 and 1e-12 (`conf/experiment/width.yaml`, DVC stages `train_width` "
        "-> `report_paper@width`).",
        "",
        f"- Cells: {', '.join(f'`{c}`' for c in dict.fromkeys(table.cell))}; widths "
        f"{', '.join(str(w) for w in sorted(table.width.unique()))}.",
        f"- Budget as the eps experiment: {data.get('train_size')} training images, "
        f"{config.get('trainer', {}).get('max_epochs')} epoch, batch {data.get('batch_size')}; a run fails to train "
        f"when its final test accuracy is below {FAILS_BELOW:.0%} or it diverged.",
        f"- Seeds: {' '.join(str(s) for s in sorted(table.seed.unique()))} per cell, width and arm, paired by seed "
        "across the two arms (the same initial weights).",
    ]
    shown = summary.assign(fails=[f"{r.n_failed}/{r.n_runs} [{r.fail_ci_low:.2f}, {r.fail_ci_high:.2f}]"
                                  for r in summary.itertuples(index=False)])  # fmt: skip
    sections = [[
        "## Failures per cell, width and eps", "",
        "`weight grad`: the step-0 median weight-gradient std (each run's own probe, geometric mean over seeds). "
        "`tables/widths.csv` holds the table.", "",
        markdown_table(scientific(shown, ["weight_grad_gmean"])[["cell", "width", "arm", "fails", "acc_mean", "weight_grad_gmean"]]
                       .rename(columns={"weight_grad_gmean": "weight grad"})),
    ], ["## Tests", "", markdown_table(pd.DataFrame(eps_rows)), "", markdown_table(pd.DataFrame(width_rows))],
        conclusion(eps_claims, width_claims)]  # fmt: skip
    metrics = {"cells": {f"{r.cell}/{r.width}/{r.arm}": {"n_runs": r.n_runs, "n_failed": r.n_failed,
                                                        "acc_mean": r.acc_mean}
                         for r in summary.itertuples(index=False)},
               "eps_by_width": {str(r["width"]): {"p_one_sided": r["p_one_sided"], "pairs": r["pairs"]}
                                for r in eps_rows},
               "width_by_cell": {r["cell"]: {"p_two_sided": r["p_two_sided"]} for r in width_rows}}  # fmt: skip
    return PaperReport(title="Width as a factor of the eps question", setup=setup,
                       claims=[*eps_claims, *width_claims], metrics=metrics, sections=sections,
                       figures={"Failures against width, per eps": "failures_by_width.png"},
                       claims_file="conf/experiment/claims/width.yaml",
                       tables={"runs.csv": table.drop(columns="run_dir"), "widths.csv": summary,
                               "tests.csv": pd.concat([pd.DataFrame(eps_rows), pd.DataFrame(width_rows)])})  # fmt: skip
