"""report.md: the setup (from the resolved config), the tables, the figures, and statements the data support.

Every sentence is generated from the numbers; none is a hard-coded conclusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from initstudy.report.load import parse_group
from initstudy.report.stats import ALPHA, SEED_NOTEBOOK


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def setup_section(config: dict[str, Any], runs: pd.DataFrame) -> str:
    model, optimizer, data, trainer = (config.get(k, {}) for k in ("model", "optimizer", "data", "trainer"))
    sizes = [model.get("input_size", 784), *model.get("hidden_sizes", []), model.get("num_classes", 10)]
    opt_name = str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
    opt_args = ", ".join(f"{k}={v}" for k, v in optimizer.items() if not k.startswith("_"))
    train_size = data.get("train_size") or "all 60,000"
    seeds = sorted(runs.seed.unique().tolist())
    made_on = (
        runs.groupby(["device", "numerics"]).size().items()
        if {"device", "numerics"} <= set(runs.columns)
        else []
    )
    numerics = "; ".join(
        f"{n} runs on {device} under `numerics={profile}`" for (device, profile), n in made_on
    )
    return "\n".join(
        [
            "## Setup",
            "",
            f"- Network: {'-'.join(map(str, sizes))} MLP, {model.get('activation', '?')} activations, "
            "cross-entropy on logits; biases start at zero (except `torch_default`).",
            f"- Optimizer: {opt_name} ({opt_args}); batch size {data.get('batch_size')}; "
            f"{trainer.get('max_epochs')} epochs; training images: {train_size}; "
            f"held-out fraction: {data.get('val_fraction', 0.0)}.",
            f"- Initializers: {', '.join(f'`{i}`' for i in runs.init.unique())}; seeds {seeds} "
            f"({len(runs)} runs in the sweep manifest).",
            "- Accuracy is measured on the MNIST test images after every epoch (epoch 0 = at initialization).",
            f"- Numerics (each run's `numerics.json`): {numerics or 'not recorded'}. CPU and GPU results differ by "
            "design; `numerics=portable` pins the CPU arithmetic across x86-64 machines (README).",
            "- Derived from the resolved config of the runs (`runs/*/seed_*/config.yaml`), not retyped.",
        ]
    )


def summary_table(summary: pd.DataFrame) -> str:
    table = pd.DataFrame(
        {
            "initializer": summary.init,
            "runs": [f"{c}/{n}" for c, n in zip(summary.n_complete, summary.n_runs, strict=True)],
            "test acc mean ± std": [
                f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(summary.acc_mean, summary.acc_std, strict=True)
            ],
            "95% CI": [
                f"[{_fmt(lo)}, {_fmt(hi)}]"
                for lo, hi in zip(summary.acc_ci95_low, summary.acc_ci95_high, strict=True)
            ],
            "min": summary.acc_min,
            "max": summary.acc_max,
            "seed notebook": summary.seed_notebook_acc,
            "test loss": summary.loss_mean,
            "epochs to 97% (median, reached)": [
                f"{_fmt(e, 1)} ({r}/{c})"
                for e, r, c in zip(
                    summary.epochs_to_97_median, summary.reached_97, summary.n_complete, strict=True
                )
            ],
            "diverged": summary.n_diverged,
            "failed": summary.n_failed,
        }
    )
    return _table(table)


def comparisons_table(comparisons: pd.DataFrame) -> str:
    if comparisons.empty:
        return "_Fewer than two initializers: nothing to compare._"
    table = pd.DataFrame(
        {
            "A": comparisons.init_a,
            "B": comparisons.init_b,
            "mean acc A − B": comparisons.diff_mean,
            "95% CI of difference": [
                f"[{_fmt(lo)}, {_fmt(hi)}]"
                for lo, hi in zip(comparisons.diff_ci95_low, comparisons.diff_ci95_high, strict=True)
            ],
            "Welch p": comparisons.p_value,
            "BH-adjusted p": comparisons.p_adjusted,
            f"significant (α={ALPHA})": ["yes" if s else "no" for s in comparisons.significant],
        }
    )
    return _table(table)


def statements(summary: pd.DataFrame, comparisons: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Short claims, each computed from this sweep's numbers."""
    out: list[str] = []
    done = runs[runs.status == "complete"]
    for row in summary.itertuples(index=False):
        group = done[done.init == row.init]
        if len(group) == 0:
            out.append(f"`{row.init}`: no complete run ({row.n_failed} failed or incomplete).")
            continue
        distinct = group.get("distinct_hidden_units")
        if distinct is not None and all(isinstance(d, list) and all(u == 1 for u in d) for d in distinct):
            units = group.iloc[0].get("hidden_units")
            out.append(
                f"`{row.init}` never breaks symmetry: in all {len(group)} runs, every unit of each hidden layer "
                f"(sizes {units}) ends training with the same weights (1 distinct weight row per layer)."
            )
        constant = group.get("test/distinct_predictions")
        if constant is not None and (constant == 1).all():
            share = float(group["test/majority_class_share"].iloc[0])
            classes = sorted(set(int(c) for c in group["test/majority_class"]))
            matches = (group["test/acc"].astype(float).round(6) == round(share, 6)).sum()
            out.append(
                f"`{row.init}` predicts one class for every test image in all {len(group)} runs; in {matches} of them "
                f"the accuracy equals the share of the most frequent test class ({classes}, {share:.4f})."
            )
        reference = SEED_NOTEBOOK.get(row.init)
        if reference is not None and not math.isnan(row.acc_ci95_low):
            inside = row.acc_ci95_low <= reference <= row.acc_ci95_high
            out.append(
                f"`{row.init}`: the seed notebook's single run ({reference:.4f}) lies "
                f"{'inside' if inside else 'outside'} this study's 95% CI [{row.acc_ci95_low:.4f}, {row.acc_ci95_high:.4f}] "
                f"(mean {row.acc_mean:.4f}, difference {row.acc_mean - reference:+.4f})."
            )
        if row.n_diverged:
            steps = group[group.get("diverged", False) == True].get("diverged_at_step")  # noqa: E712
            out.append(
                f"`{row.init}`: {row.n_diverged} run(s) diverged (loss NaN/inf) at step(s) {list(steps)}."
            )
    if not comparisons.empty and comparisons.p_adjusted.notna().any():
        significant = comparisons[comparisons.significant]
        n = int(summary.n_complete.min())
        out.append(
            f"With {n}–{int(summary.n_complete.max())} seeds per initializer, {len(significant)} of "
            f"{len(comparisons)} pairwise differences in mean accuracy are significant after Benjamini-Hochberg "
            f"correction (α={ALPHA})."
        )
        nonsignificant = comparisons[~comparisons.significant & comparisons.p_adjusted.notna()]
        for row in nonsignificant.itertuples(index=False):
            out.append(
                f"`{row.init_a}` vs `{row.init_b}`: difference {row.diff_mean:+.4f} is not distinguishable from "
                f"seed noise at this number of seeds (adjusted p = {row.p_adjusted:.3f})."
            )
    reached = summary[summary.reached_97 > 0]
    if len(reached) > 1:
        best = reached.steps_to_97_median.min()
        fastest = reached[reached.steps_to_97_median == best]
        names = ", ".join(f"`{name}`" for name in fastest.init)
        out.append(
            f"Fastest to 97% test accuracy (evaluated once per epoch): {names} "
            f"({'tied, ' if len(fastest) > 1 else ''}median {best:.0f} optimizer steps); "
            + "; ".join(
                f"`{r.init}` {r.steps_to_97_median:.0f} steps ({r.reached_97}/{r.n_complete} runs)"
                for r in reached.sort_values("steps_to_97_median").itertuples(index=False)
            )
            + "."
        )
    never = summary[(summary.reached_97 == 0) & (summary.n_complete > 0)]
    for row in never.itertuples(index=False):
        out.append(f"`{row.init}` never reached 97% test accuracy in any of its {row.n_complete} runs.")
    return out


SEED_NOTEBOOK_NOTE = (
    "The seed notebook column is the Keras notebook's single run per initializer (seed 42). Its 0.1135 for "
    "zeros is the share of the digit 1 among the 10,000 test images: a constant prediction."
)
SPREAD_NOTE = "Pairs where both initializers give the same value in every seed have no spread to test."


@dataclass
class Section:
    """One group's results: the whole sweep when nothing but init and seed varies (group '')."""

    group: str
    runs: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame  # adjusted over every test of the sweep
    figures: dict[str, str]  # caption: path relative to report.md


def results(section: Section, level: str, notes: bool) -> list[str]:
    """Summary, statements and comparisons of one section, headed at ``level`` ('##' or '###')."""
    return [
        f"{level} Final test accuracy per initializer",
        "",
        summary_table(section.summary),
        "",
        *([SEED_NOTEBOOK_NOTE, ""] if notes else []),
        f"{level} What the data support",
        "",
        *[f"- {statement}" for statement in statements(section.summary, section.comparisons, section.runs)],
        "",
        f"{level} Pairwise comparisons",
        "",
        comparisons_table(section.comparisons),
        "",
        *(
            [
                "Welch's t-test on final test accuracy across seeds, p-values adjusted for the number of pairs with "
                f"Benjamini-Hochberg. {SPREAD_NOTE}",
                "",
            ]
            if notes
            else []
        ),
    ]


def figure_lines(section: Section, level: str) -> list[str]:
    """The section's figures with their captions (last in a section, after the diagnostics if ungrouped)."""
    return [
        f"{level} Figures",
        "",
        *[f"![{caption}]({path})\n\n{caption}.\n" for caption, path in section.figures.items()],
    ]


def groups_overview(sections: list[Section]) -> list[str]:
    """Which keys varied besides init and seed, and how the grouped report tests: said once, up front."""
    keys = [parse_group(section.group) for section in sections]
    varied = {key: sorted({k[key] for k in keys if key in k}) for key in sorted(set().union(*keys))}
    n_tests = sum(int(s.comparisons.p_value.notna().sum()) for s in sections if not s.comparisons.empty)
    return [
        "## Groups",
        "",
        "Besides the initializer and the seed, this sweep varied "
        + ", ".join(f"`{key}` ({', '.join(values)})" for key, values in varied.items())
        + f": {len(sections)} groups, each reported in a section of its own below (sorted by name). The setup above "
        "shows the first run's values of these keys.",
        "",
        "Initializers are compared only within a group (Welch's t-test on final test accuracy across seeds). "
        f"The Benjamini-Hochberg correction runs over all {n_tests} tests of the sweep at once, not per group: "
        "the report reads them together, so it bounds the expected share of false discoveries among all of its "
        "significant differences, whichever group they are in (a per-group correction would bound it only within "
        f"each group). {SPREAD_NOTE}",
        "",
        SEED_NOTEBOOK_NOTE,
        "",
    ]


def render(
    config: dict[str, Any], runs: pd.DataFrame, sections: list[Section], extra: list[str] | None = None
) -> str:
    """The whole report.md: one results section for an ungrouped sweep, one per group otherwise."""
    failed = runs[runs.status != "complete"]
    grouped = len(sections) > 1
    lines = [
        "# Weight initialization on MNIST: report",
        "",
        "Generated by `python -m initstudy.report` (DVC stage `report`) from the run folders listed in "
        "`runs/manifest.csv`. Do not edit by hand: `dvc repro` rewrites it.",
        "",
        setup_section(config, runs),
        "",
    ]
    if grouped:
        lines += groups_overview(sections)
        for section in sections:
            title = ", ".join(f"`{k}={v}`" for k, v in parse_group(section.group).items())
            lines += [f"## Group {title}", "", *results(section, "###", False), *figure_lines(section, "###")]
        lines += extra or []
    else:
        lines += [*results(sections[0], "##", True), *(extra or []), *figure_lines(sections[0], "##")]
    if len(failed):
        lines += [
            "## Runs that did not complete",
            "",
            _table(failed[[*(["group"] if grouped else []), "init", "seed", "status", "run_dir"]]),
            "",
        ]
    return "\n".join(lines) + "\n"
