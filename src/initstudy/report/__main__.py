"""``python -m initstudy.report [--runs runs] [--out reports]``: the DVC ``report`` stage.

Reads only the runs listed in ``<runs>/manifest.csv`` (never MLflow) and writes, atomically:
metrics.json (DVC metrics), summary.csv, comparisons.csv, curves.csv (DVC plots), figures/*.png, report.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from initstudy import atomic
from initstudy.faults import pause_point
from initstudy.report import figures
from initstudy.report.depth import is_depth_sweep, write_depth_report
from initstudy.report.load import RunFileError, load_sweep
from initstudy.report.markdown import render
from initstudy.report.stats import compare, summarize


def metrics_json(summary: pd.DataFrame) -> dict:
    """Per initializer: what `dvc metrics diff` should show when a parameter changes."""
    out = {}
    for row in summary.itertuples(index=False):
        out[row.init] = {
            "test_acc_mean": row.acc_mean,
            "test_acc_std": row.acc_std,
            "test_loss_mean": row.loss_mean,
            "test_loss_std": row.loss_std,
            "n_runs": int(row.n_complete),
            "n_diverged": int(row.n_diverged),
            "n_failed": int(row.n_failed),
        }
    return out


def curves(history: pd.DataFrame) -> pd.DataFrame:
    """Long format, epoch-level: initializer, seed, epoch, metric, value."""
    per_epoch = history[history.metric != "train/loss_step"]
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


def publish(staging: Path, out_dir: Path) -> None:
    """Move every file written to ``staging`` into ``out_dir`` (each replace atomic), then drop ``staging``."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), reverse=True):
        folder.rmdir()
    staging.rmdir()


def remove_stale_staging(out_dir: Path) -> None:
    """A report killed before it published leaves its staging folder: the files in it are ours by name."""
    for staging in out_dir.glob(f"{STAGING_PREFIX}*"):
        for path in [*staging.glob("figures/*.png"), *staging.glob("*.csv"), *staging.glob("*.json"),
                     *staging.glob("*.md"), *staging.glob(".*.tmp")]:  # fmt: skip
            path.unlink()
        for folder in (staging / "figures", staging):
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_report(runs_dir: Path, out_dir: Path, diagnostics_dir: Path | None = None) -> dict:
    """Read and check every run first, write everything to a staging folder, and only then replace the
    previous report's files: a failure at any point leaves the previous report as it was."""
    sweep = load_sweep(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        written = _write(sweep, staging, out_dir, diagnostics_dir)
    except BaseException:
        remove_stale_staging(out_dir)
        raise
    pause_point("report-publish")
    publish(staging, out_dir)
    return written


def _write(sweep, out_dir: Path, link_base: Path, diagnostics_dir: Path | None) -> dict:
    if is_depth_sweep(sweep.runs):
        return write_depth_report(
            sweep.runs, sweep.history, sweep.config, out_dir, diagnostics_dir, link_base
        )
    summary = summarize(sweep.runs, sweep.history)
    comparisons = compare(sweep.runs)
    split = "val" if (sweep.config.get("data", {}).get("val_fraction") or 0) > 0 else "test"
    inits = list(summary.init)

    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    made = {
        "Test error and training loss per epoch": "learning_curves.png",
        "Final test error per initializer": "final_accuracy.png",
        "Optimizer steps to 97% test accuracy": "steps_to_97.png",
        "Training loss against optimizer steps": "train_loss_steps.png",
    }
    figures.learning_curves(
        sweep.history, inits, split, figure_dir / made["Test error and training loss per epoch"]
    )
    figures.final_accuracy(sweep.runs, summary, figure_dir / made["Final test error per initializer"])
    figures.steps_to_threshold(
        sweep.runs, summary, "97", figure_dir / made["Optimizer steps to 97% test accuracy"]
    )
    figures.train_loss_by_step(
        sweep.history, inits, figure_dir / made["Training loss against optimizer steps"]
    )

    atomic.write_json(out_dir / "metrics.json", metrics_json(summary))
    atomic.write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    atomic.write_text(out_dir / "comparisons.csv", comparisons.to_csv(index=False))
    atomic.write_text(out_dir / "curves.csv", curves(sweep.history).to_csv(index=False))
    report = render(
        sweep.config,
        sweep.runs,
        summary,
        comparisons,
        {caption: f"figures/{name}" for caption, name in made.items()},
        extra=diagnostics_section(diagnostics_dir, link_base),
    )
    atomic.write_text(out_dir / "report.md", report)
    return {row.init: row.acc_mean for row in summary.itertuples(index=False)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m initstudy.report", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="sweep folder holding manifest.csv")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    parser.add_argument("--diagnostics", type=Path, default=None, help="output folder of the diagnose stage")
    args = parser.parse_args(argv)
    try:
        means = write_report(args.runs, args.out, args.diagnostics)
    except (RunFileError, FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for init, mean in means.items():
        print(f"{init:>18}: mean test accuracy {'–' if math.isnan(mean) else f'{mean:.4f}'}")
    print(f"report written to {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
