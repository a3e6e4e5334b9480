"""``python -m initstudy.report [--runs runs] [--out reports]``: the DVC ``report`` stage.

Reads only the runs listed in ``<runs>/manifest.csv`` (results never come from MLflow) and writes, atomically:
metrics.json (DVC metrics), summary.csv, comparisons.csv, accuracy_bootstrap.csv (test accuracy with the seeds
and the test images resampled: initstudy.report.image_bootstrap), endpoints.csv (every run's compared endpoints),
curves.csv (DVC plots), registered_models.csv (each initializer's median run in the MLflow model registry:
initstudy.report.registry), figures/*.png, report.md.
A sweep that varies keys besides init and seed (the manifest's ``group``) is reported per group: tables gain
the group's keys as columns, metrics.json is keyed by group, figures go to figures/<group>/.
A depth sweep gets the depth report (initstudy.report.depth). ``--paper <name>`` writes a classic paper's
side-by-side report instead (initstudy.report.papers.claims): paper_vs_ours.csv, tables/, metrics.json, figures/,
report.md.
"""

from __future__ import annotations

# First: pins numpy's OpenBLAS (kernels, threads) before numpy loads it (the Schoenholz report's mean field).
from initstudy.core import blas  # noqa: F401

# isort: split

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from initstudy.core import atomic, signals
from initstudy.core.errors import no_space
from initstudy.core.faults import pause_point
from initstudy.report import figures, registry
from initstudy.report.depth import is_depth_sweep, write_depth_report
from initstudy.report.endpoints import endpoints, first_evaluations, run_endpoints, times_to
from initstudy.report.image_bootstrap import compare_accuracy
from initstudy.report.load import SweepRuns, group_folder, load_sweep, split_groups, with_group_keys
from initstudy.report.markdown import SPEED_KEY, Section, render
from initstudy.report.papers.claims import write as write_paper_report
from initstudy.report.papers.registry import check_claims, check_paper, writers
from initstudy.report.speed_test import speed_comparisons
from initstudy.report.stats import adjust, compare_endpoints, summarize, untrained
from initstudy.report.study_rules import (
    difference_rule,
    equivalence_rules,
    judge_accuracy,
    judge_differences,
    judge_seeds_equivalence,
    seeds_equivalence_rule,
)
from initstudy.runs.results import RunFileError


def metrics_json(summary: pd.DataFrame) -> dict:
    """Per initializer: what `dvc metrics diff` should show when a parameter changes."""
    out = {}
    for row in summary.itertuples(index=False):
        out[row.init] = {
            "test_acc_mean": row.acc_mean,
            "test_acc_std": row.acc_std,
            "test_loss_mean": row.loss_mean,
            "test_loss_std": row.loss_std,
            "steps_to_97_km_median": row.steps_to_97_km_median,
            "reached_97": int(row.reached_97),
            "train_loss_auc_mean": row.train_loss_auc_mean,
            "val_loss_min_mean": row.val_loss_min_mean,
            "n_runs": int(row.n_complete),
            "n_diverged": int(row.n_diverged),
            "n_failed": int(row.n_failed),
        }
    return out


def curves(history: pd.DataFrame) -> pd.DataFrame:
    """Long format, epoch-level (DVC plots): initializer, seed, epoch, metric, value. The step series
    (``*_step``) are in the figures and history.csv."""
    per_epoch = history[~history.metric.str.endswith("_step")]
    frame = per_epoch.rename(columns={"init": "initializer"})[
        ["initializer", "seed", "epoch", "metric", "value"]
    ]
    return frame.sort_values(["initializer", "seed", "metric", "epoch"], kind="stable").reset_index(drop=True)


def diagnostics_section(diagnostics_dir: Path | None, out_dir: Path) -> list[str]:
    """The step-0 signal-propagation findings (written by the diagnose stage), figures linked relative to out."""
    if diagnostics_dir is None or not (diagnostics_dir / "statements.json").is_file():
        return []
    found = json.loads((diagnostics_dir / "statements.json").read_text())
    lines = ["## Signal propagation at initialization", "",
             "Measured at step 0 on the first 1,000 training images (mean over seeds), against the variance "
             "argument behind each initializer (dotted lines in the figures; `python -m initstudy.diagnose`, table: "
             f"`{os.path.relpath(diagnostics_dir / 'diagnostics.csv', out_dir)}`).", ""]  # fmt: skip
    lines += [f"- {statement}" for statement in found["statements"]] + [""]
    for caption, name in found["figures"].items():
        lines += [f"![{caption}]({os.path.relpath(diagnostics_dir / name, out_dir)})", ""]
    return lines


STAGING_PREFIX = ".report-staging-"


FIGURES_RECORD = Path("figures") / ".initstudy-figures.json"  # the figures the last report drew


def publish(staging: Path, out_dir: Path) -> None:
    """Move every file written to ``staging`` into ``out_dir`` (each replace atomic), then drop ``staging``.
    A figure the previous report drew (its record names it) and this one did not (a group no longer swept)
    goes; a file no report recorded stays, whatever it is."""
    written = {path.relative_to(staging) for path in staging.rglob("*") if path.is_file()}
    figures = sorted(p.as_posix() for p in written if p.parts[0] == "figures")
    atomic.write_json(staging / FIGURES_RECORD, {"figures": figures})
    previous = _recorded_figures(out_dir)
    for relative in sorted({*written, FIGURES_RECORD}):
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)
    for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), reverse=True):
        folder.rmdir()
    staging.rmdir()
    for stale in sorted(previous - set(figures)):
        (out_dir / stale).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else lives there; leave it
            (out_dir / stale).parent.rmdir()


def _recorded_figures(out_dir: Path) -> set[str]:
    """The figures the previous report recorded (inside figures/ only); none when there is no record."""
    try:
        recorded = json.loads((out_dir / FIGURES_RECORD).read_text()).get("figures", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {
        name
        for name in recorded
        if isinstance(name, str) and name.startswith("figures/") and ".." not in name
    }


def remove_stale_staging(out_dir: Path) -> None:
    """A report killed before it published leaves its staging folder: the files in it are ours by name."""
    for staging in out_dir.glob(f"{STAGING_PREFIX}*"):
        for path in [*staging.glob("figures/*.png"), *staging.glob("figures/*/*.png"), *staging.glob("*.csv"),
                     *staging.glob("tables/*.csv"), *staging.glob("tables/.*.tmp"),
                     *staging.glob("*.json"), *staging.glob("*.md"), *staging.glob(".*.tmp"),
                     staging / FIGURES_RECORD, *staging.glob("figures/.*.tmp")]:  # fmt: skip
            path.unlink(missing_ok=True)
        for folder in (*staging.glob("figures/*/"), staging / "figures", staging / "tables", staging):
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_report(
    runs_dir: Path,
    out_dir: Path,
    diagnostics_dir: Path | None = None,
    margin: float | None = None,
    paper: str | None = None,
    grid: Path | None = None,
) -> dict:
    """Read and check every run first, write everything to a staging folder, and only then replace the
    previous report's files: a failure at any point leaves the previous report as it was. ``paper``: the
    classic paper the sweep reproduces (initstudy.report.papers.claims), whose side-by-side report replaces the
    study report. ``margin``: the seeds-only equivalence margin, when not the claims file's (rule
    ``accuracy_equivalent_seeds_only`` of conf/experiment/claims/study.yaml, read before any run). ``grid``: a
    second sweep the paper's report reads (the tuned comparison's learning-rate grid, runs_lr_grid)."""
    if paper is not None:
        check_paper(paper)
        check_claims(paper)  # a malformed claims file is refused before any run is read
    else:
        seeds_equivalence_rule()  # a claims file without a usable margin is refused before anything is read
    sweep = load_sweep(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        written = (
            _write_paper(paper, sweep, staging, out_dir, diagnostics_dir, grid)
            if paper is not None
            else _write(sweep, staging, out_dir, diagnostics_dir, margin)
        )
    except BaseException:
        remove_stale_staging(out_dir)
        raise
    pause_point("report-publish")
    publish(staging, out_dir)
    return written


FIGURES = {
    "Final test error per initializer (evaluated once)": "final_accuracy.png",
    "Differences between initializers with 95% CIs and the equivalence margin": "forest_plot.png",
    "Training and validation loss against optimizer steps (mean, min-max band over seeds)": "loss_by_step.png",
    "Validation error against optimizer steps (mean, min-max band over seeds)": "val_error_by_step.png",
    "Runs not yet at 97% validation accuracy (Kaplan-Meier)": "time_to_97.png",
}


def draw_figures(
    part: SweepRuns, summary: pd.DataFrame, comparisons: pd.DataFrame, figure_dir: Path, group: str
) -> None:
    """The figures of one group (the whole sweep when there is one), titled with the group."""
    inits = list(summary.init)
    figure_dir.mkdir(parents=True, exist_ok=True)
    path = {file: figure_dir / file for file in FIGURES.values()}
    figures.final_accuracy(part.runs, summary, path["final_accuracy.png"], group)
    figures.forest_plot(comparisons, path["forest_plot.png"], group)
    figures.loss_by_step(part.history, inits, path["loss_by_step.png"], group)
    figures.val_error_by_step(part.history, inits, path["val_error_by_step.png"], group)
    first_passes = first_evaluations(part.history)  # a crossing before the first pass is drawn there
    figures.time_to_threshold(times_to(part.runs, 0.97, first_passes), path["time_to_97.png"], "97%", group)


def evaluation_split(config: dict) -> tuple[str, str]:
    """The split every curve is measured on: ('val', 'validation') with a held-out split, else the test set."""
    return ("val", "validation") if int(config.get("data", {}).get("val_size") or 0) > 0 else ("test", "test")


def _write_paper(
    paper: str,
    sweep: SweepRuns,
    out_dir: Path,
    link_base: Path,
    diagnostics_dir: Path | None,
    grid: Path | None = None,
) -> dict:
    """The classic paper's report: its claims beside ours, its figures, the step-0 diagnostics; ``grid``, where
    given, is handed to the paper's writer (only the tuned comparison's reads one)."""
    extra = {} if grid is None else {"grid": grid}
    made = writers()[paper](sweep, out_dir, diagnostics_dir, **extra)
    return write_paper_report(made, sweep.runs, out_dir, diagnostics_section(diagnostics_dir, link_base))


def _write(
    sweep: SweepRuns, out_dir: Path, link_base: Path, diagnostics_dir: Path | None, margin: float | None
) -> dict:
    if is_depth_sweep(sweep.runs):
        return write_depth_report(sweep, out_dir, diagnostics_dir, link_base)
    split, split_name = evaluation_split(sweep.config)
    first_eval_step = sweep.config.get("module", {}).get("val_every_n_steps")
    compared = endpoints(split, first_eval_step)
    groups = split_groups(sweep)
    # Read before any test runs: its value is the level of every seeds-only test (conf/experiment/claims/study.yaml).
    difference = difference_rule()
    equivalence = equivalence_rules()
    seeds_equivalence = seeds_equivalence_rule()
    margin = seeds_equivalence.value if margin is None else margin
    per_run = {name: run_endpoints(part.runs, part.history, split, first_eval_step) for name, part in groups}
    # Initializers are compared within a group; the correction runs per endpoint over every test of the sweep
    # at once (the report reads them all together), which for a single group is the correction over its pairs.
    tests = [
        compare_endpoints(
            per_run[name], compared, margin, alpha=difference.value, set_apart=untrained(part.runs)
        ).assign(group=name)
        for name, part in groups
    ]
    every = pd.concat([t for t in tests if len(t)] or [pd.DataFrame()], ignore_index=True)
    comparisons = judge_seeds_equivalence(
        judge_differences(adjust(every, alpha=difference.value), difference), seeds_equivalence
    )
    sections = []
    for name, part in groups:
        summary = summarize(part.runs, per_run[name], part.history)
        tested = comparisons[comparisons.group == name] if len(comparisons) else comparisons
        tested = tested.drop(columns="group", errors="ignore").reset_index(drop=True)
        folder = Path("figures", group_folder(name))
        draw_figures(part, summary, tested, out_dir / folder, name)
        links = {caption: (folder / file).as_posix() for caption, file in FIGURES.items()}
        speed = speed_comparisons(part.runs, part.history, int(SPEED_KEY) / 100)
        trained = part.runs[(part.runs.status == "complete") & ~part.runs.init.isin(untrained(part.runs))]
        accuracy = judge_accuracy(compare_accuracy(trained[["init", "seed", "run_dir"]]), equivalence)
        sections.append(Section(group=name, runs=part.runs, summary=summary, comparisons=tested, figures=links,
                                difference=difference, split_name=split_name, margin=margin, speed=speed,
                                accuracy=accuracy, equivalence=equivalence,
                                seeds_equivalence=seeds_equivalence))  # fmt: skip

    grouped = len(groups) > 1
    metrics = {s.group: metrics_json(s.summary) for s in sections}
    atomic.write_json(out_dir / "metrics.json", metrics if grouped else metrics[""])
    for file, frames in (
        ("summary.csv", [with_group_keys(s.summary, s.group) for s in sections]),
        ("comparisons.csv", [with_group_keys(s.comparisons, s.group) for s in sections]),
        ("endpoints.csv", [with_group_keys(per_run[name], name) for name, _ in groups]),
        ("curves.csv", [with_group_keys(curves(part.history), name) for name, part in groups]),
        ("accuracy_bootstrap.csv", [with_group_keys(s.accuracy, s.group) for s in sections]),
        (registry.FILE, [registry.register_groups(groups, sweep.config, link_base / registry.FILE)]),
    ):
        atomic.write_text(out_dir / file, pd.concat(frames, ignore_index=True).to_csv(index=False))
    report = render(sweep.config, sweep.runs, sections, extra=diagnostics_section(diagnostics_dir, link_base))
    atomic.write_text(out_dir / "report.md", report)
    return {
        f"{s.group} {row.init}" if grouped else row.init: row.acc_mean
        for s in sections
        for row in s.summary.itertuples(index=False)
    }


@signals.entry_point("initstudy.report")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m initstudy.report", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="sweep folder holding manifest.csv")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    parser.add_argument("--diagnostics", type=Path, default=None, help="output folder of the diagnose stage")
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="seeds-only equivalence margin for accuracy differences, as a fraction (default: the value of "
        "rule accuracy_equivalent_seeds_only in conf/experiment/claims/study.yaml)",
    )
    parser.add_argument(
        "--paper",
        default=None,
        help="the classic paper the sweep reproduces: glorot2010, he2015, schoenholz2017 or saxe2014; notebook: the "
        "seed notebook's numbers against its own protocol (experiment=notebook)",
    )
    parser.add_argument(
        "--grid",
        type=Path,
        default=None,
        help="with --paper tuned: the learning-rate grid's sweep folder (runs_lr_grid), whose validation "
        "accuracy chose each initializer's rate",
    )
    args = parser.parse_args(argv)
    if args.paper is not None:
        try:
            check_paper(args.paper)
        except ValueError as error:
            parser.error(str(error))
    if args.margin is not None and not 0 < args.margin < 1:
        parser.error(f"invalid --margin={args.margin}: must be a fraction in (0, 1), e.g. 0.005 for ±0.5 pp")
    try:
        means = write_report(args.runs, args.out, args.diagnostics, args.margin, args.paper, args.grid)
    except (RunFileError, FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {no_space(error, args.out) or error}", file=sys.stderr)
        raise SystemExit(1) from None
    for name, value in means.items():
        if args.paper is not None:  # claim -> verdict
            print(f"{value:>10}: {name}")
        else:
            print(f"{name:>18}: mean test accuracy {'–' if math.isnan(value) else f'{value:.4f}'}")
    print(f"report written to {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
