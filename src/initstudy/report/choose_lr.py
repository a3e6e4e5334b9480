"""Each initializer's Adam learning rate, chosen on validation over the learning-rate grid
(conf/experiment/lr_grid.yaml), written as the options of the tuned sweep's group conf/tuned_arm/
(``<init>_chosen.yaml``: the initializer and its rate, as the committed ``<init>_fixed.yaml`` holds 1e-3): so the
chosen rates are committed files that git, ``dvc params diff`` and dvc.lock show, the tuned runs' configs name
them, and the training stages' dependencies (the config code, params.yaml) never change.

The choice: per initializer, the rate with the highest final validation accuracy, mean over the grid's seeds;
a tie goes to the smaller rate. The test set never steers it. Every grid run must be complete and every rate
of an initializer must have the same seeds, else the choice is refused in one line.

``python -m initstudy.report.choose_lr --runs runs_lr_grid --out conf/tuned_arm`` (DVC stage choose_lr) writes
one file per initializer of the grid, each atomically and byte for byte the same for the same grid.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from initstudy.core import atomic
from initstudy.report.load import load_sweep
from initstudy.runs.results import RunFileError, read_config

LR_KEY = ("optimizer", "lr")
PACKAGE_LINE = "# @package _global_"
CHOSEN_SUFFIX = "_chosen.yaml"  # conf/tuned_arm/<init>_chosen.yaml


class ChosenFileError(ValueError):
    """A chosen-rate file that is missing, malformed or lacks an initializer."""


def grid_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per grid run: init, lr (its config's optimizer.lr), seed, final validation and test accuracy;
    initializers in the sweep's order, then rates and seeds ascending. Every run must be complete (a choice over part of the grid would depend on which runs happened to finish)."""
    missing = runs[runs.status != "complete"]
    if not missing.empty:
        raise RunFileError(
            f"{len(missing)} grid run(s) are not complete (first: {missing.run_dir.iloc[0]}): run the grid first"
        )
    table = pd.DataFrame({
        "init": runs.init.astype(str).to_numpy(), "lr": [run_lr(Path(d)) for d in runs.run_dir], "seed": runs.seed.astype(int).to_numpy(),
        "val_acc": runs["val/acc"].astype(float).to_numpy(), "test_acc": runs["test/acc"].astype(float).to_numpy(),
    })  # fmt: skip
    order = {init: i for i, init in enumerate(dict.fromkeys(table.init))}  # the sweep's order of initializers
    return (
        table.assign(order=table.init.map(order))
        .sort_values(["order", "lr", "seed"], kind="stable")
        .drop(columns="order")
        .reset_index(drop=True)
    )


def run_lr(run_dir: Path) -> float:
    """The Adam learning rate a run trained at: its config's optimizer.lr, a number, else a one-line error."""
    config = read_config(run_dir / "config.yaml")
    lr = (config.get(LR_KEY[0]) or {}).get(LR_KEY[1])
    if not isinstance(lr, int | float) or isinstance(lr, bool):
        raise RunFileError(f"{run_dir / 'config.yaml'} has no numeric optimizer.lr")
    return float(lr)


def choose(table: pd.DataFrame) -> pd.DataFrame:
    """Per initializer and rate: the seeds, the final validation accuracy's mean, sd, min and max over them, and
    whether the rate is the initializer's choice (the highest mean; a tie, the smaller rate). Initializers in
    their first appearance's order, rates ascending. A rate whose seeds differ from the others' is refused."""
    rows = []
    for init in dict.fromkeys(table.init):
        mine = table[table.init == init]
        seeds = {lr: tuple(sorted(g.seed)) for lr, g in mine.groupby("lr")}
        if len(set(seeds.values())) != 1:
            raise RunFileError(f"the grid's rates of {init!r} have different seeds: {seeds}")
        for lr, group in mine.groupby("lr", sort=True):
            acc = group.val_acc.to_numpy(dtype=float)
            rows.append({"init": init, "lr": float(lr), "n_seeds": len(acc), "seeds": " ".join(map(str, seeds[lr])),
                         "val_acc_mean": float(acc.mean()), "val_acc_sd": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
                         "val_acc_min": float(acc.min()), "val_acc_max": float(acc.max())})  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        raise RunFileError("the grid holds no run")
    # Accuracies are counts / images: means of equal sums are equal floats, so a tie is an exact tie (rounding
    # guards against a sum taken in another order).
    key = out.val_acc_mean.round(12)
    best = out.assign(key=key).sort_values(["key", "lr"], ascending=[False, True], kind="stable")
    chosen = set(best.groupby("init", sort=False).head(1).index)
    return out.assign(chosen=[i in chosen for i in out.index])


def chosen_rates(choice: pd.DataFrame) -> dict[str, float]:
    """init -> chosen rate, in the choice table's order."""
    picked = choice[choice.chosen.astype(bool)]
    return {str(r.init): float(r.lr) for r in picked.itertuples(index=False)}


def rate_text(lr: float) -> str:
    """A rate as YAML reads it back as the same float (PyYAML reads ``3e-4`` as a string): the shortest digits
    that round-trip (repr's), written positionally."""
    return np.format_float_positional(float(lr), unique=True, trim="-")


def chosen_path(folder: Path, init: str) -> Path:
    return folder / f"{init}{CHOSEN_SUFFIX}"


def chosen_text(init: str, lr: float, source: str) -> str:
    """An option of conf/tuned_arm/: Hydra's package line, what wrote it, the initializer and its rate."""
    lines = [
        PACKAGE_LINE,
        f"# Generated by the DVC stage choose_lr (python -m initstudy.report.choose_lr) from {source}; do not edit.",
        f"# {init}'s Adam learning rate with the highest final validation accuracy, mean over the grid's seeds",
        "# (a tie: the smaller rate): the tuned arm of conf/experiment/tuned.yaml.",
        "defaults:",
        f"  - override /init: {init}",
        "optimizer:",
        f"  lr: {rate_text(lr)}",
    ]
    return "\n".join(lines) + "\n"


def read_chosen(path: Path, init: str) -> float:
    """The rate of an option of conf/tuned_arm/ that must select ``init``: a positive number; anything else a
    one-line :class:`ChosenFileError` naming the file."""
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ChosenFileError(f"{path} is unreadable: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict):
        raise ChosenFileError(f"{path}: must hold defaults (override /init) and optimizer.lr")
    if content.get("defaults") != [{"override /init": init}]:
        raise ChosenFileError(f"{path}: its defaults must be [override /init: {init}]")
    optimizer = content.get("optimizer")
    lr = optimizer.get("lr") if isinstance(optimizer, dict) else None
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ChosenFileError(f"{path}: optimizer.lr {lr!r} is not a positive learning rate")
    return float(lr)


def write_chosen(folder: Path, rates: dict[str, float], source: str) -> list[Path]:
    """Each initializer's ``<init>_chosen.yaml`` in ``folder``, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for init, lr in rates.items():
        path = chosen_path(folder, init)
        atomic.write_text(path, chosen_text(init, lr, source))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m initstudy.report.choose_lr", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=Path, default=Path("runs_lr_grid"), help="the grid's sweep folder")
    parser.add_argument(
        "--out", type=Path, default=Path("conf/tuned_arm"), help="the folder of the <init>_chosen.yaml files"
    )
    args = parser.parse_args(argv)
    try:
        choice = choose(grid_table(load_sweep(args.runs).runs))
    except (RunFileError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    rates = chosen_rates(choice)
    write_chosen(args.out, rates, f"{args.runs.as_posix()}/")
    for init, lr in rates.items():
        print(f"{init}: {rate_text(lr)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
