"""Each initializer's Adam learning rate, chosen on validation over the learning-rate grid
(conf/experiment/lr_grid.yaml), written as the Hydra config the tuned sweep composes (conf/tuned_lr/chosen.yaml,
read by conf/lr_arm/chosen.yaml as ``${tuned_lr.${init.name}}``): so the chosen rates are a committed file that
git, ``dvc params diff`` and dvc.lock show, and the tuned runs' configs name them.

The choice: per initializer, the rate with the highest final validation accuracy, mean over the grid's seeds;
a tie goes to the smaller rate. The test set never steers it. Every grid run must be complete and every rate
of an initializer must have the same seeds, else the choice is refused in one line.

``python -m initstudy.report.choose_lr --runs runs_lr_grid --out conf/tuned_lr/chosen.yaml`` (DVC stage
choose_lr).
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
PACKAGE_LINE = "# @package tuned_lr"


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
    lrs = []
    for run_dir in runs.run_dir:
        config = read_config(Path(run_dir) / "config.yaml")
        lr = (config.get(LR_KEY[0]) or {}).get(LR_KEY[1])
        if not isinstance(lr, int | float) or isinstance(lr, bool):
            raise RunFileError(f"{Path(run_dir) / 'config.yaml'} has no numeric optimizer.lr")
        lrs.append(float(lr))
    table = pd.DataFrame({
        "init": runs.init.astype(str).to_numpy(), "lr": lrs, "seed": runs.seed.astype(int).to_numpy(),
        "val_acc": runs["val/acc"].astype(float).to_numpy(), "test_acc": runs["test/acc"].astype(float).to_numpy(),
    })  # fmt: skip
    order = {init: i for i, init in enumerate(dict.fromkeys(table.init))}  # the sweep's order of initializers
    return (
        table.assign(order=table.init.map(order))
        .sort_values(["order", "lr", "seed"], kind="stable")
        .drop(columns="order")
        .reset_index(drop=True)
    )


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
    """A rate as YAML reads it back as a float (PyYAML reads ``3e-4`` as a string): positional digits."""
    return np.format_float_positional(float(lr), trim="-")


def chosen_text(rates: dict[str, float], source: str) -> str:
    """The chosen-rate file: Hydra's package line, where it comes from, one ``init: rate`` line each."""
    lines = [
        PACKAGE_LINE,
        f"# Written by the DVC stage choose_lr (python -m initstudy.report.choose_lr) from {source}: each trained",
        "# initializer's Adam learning rate with the highest final validation accuracy, mean over the grid's seeds",
        "# (a tie: the smaller rate). conf/lr_arm/chosen.yaml trains at these rates (conf/experiment/tuned.yaml).",
        *(f"{init}: {rate_text(lr)}" for init, lr in rates.items()),
    ]
    return "\n".join(lines) + "\n"


def read_chosen(path: Path, inits: Sequence[str] = ()) -> dict[str, float]:
    """The chosen-rate file as init -> rate, each a positive number, every one of ``inits`` present; anything
    else a one-line :class:`ChosenFileError` naming the file."""
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ChosenFileError(f"{path} is unreadable: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict) or not content:
        raise ChosenFileError(f"{path}: must map each initializer to its learning rate (init: lr)")
    for init, lr in content.items():
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
            raise ChosenFileError(f"{path}: {init}: {lr!r} is not a positive learning rate")
    absent = [init for init in inits if init not in content]
    if absent:
        raise ChosenFileError(f"{path} has no learning rate for {', '.join(absent)} (dvc repro choose_lr)")
    return {str(k): float(v) for k, v in content.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m initstudy.report.choose_lr", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=Path, default=Path("runs_lr_grid"), help="the grid's sweep folder")
    parser.add_argument(
        "--out", type=Path, default=Path("conf/tuned_lr/chosen.yaml"), help="the chosen-rate file"
    )
    args = parser.parse_args(argv)
    try:
        choice = choose(grid_table(load_sweep(args.runs).runs))
    except (RunFileError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    rates = chosen_rates(choice)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out, chosen_text(rates, f"{args.runs.as_posix()}/"))
    for init, lr in rates.items():
        print(f"{init}: {rate_text(lr)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
