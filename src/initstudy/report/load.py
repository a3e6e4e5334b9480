"""Reading the sweep's runs (and only those) from their folders; MLflow is never needed."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from initstudy.runs.manifest import read_manifest
from initstudy.runs.results import (
    RunFileError,
    _numerics_of,
    _read_json,
    read_config,
    read_history,
    run_folder,
    run_status,
)


@dataclass
class SweepRuns:
    runs: pd.DataFrame  # one row per manifest entry: init, seed, group, status, and the run's metrics
    history: pd.DataFrame  # long: init, seed, epoch, step, metric, value
    config: dict[str, Any]  # resolved config of the first complete run


def load_sweep(sweep_dir: Path) -> SweepRuns:
    manifest = read_manifest(sweep_dir)
    rows, histories, config = [], [], None
    for entry in manifest.itertuples(index=False):
        run_dir = run_folder(sweep_dir, entry.run_dir)
        status = run_status(run_dir, getattr(entry, "identity", None))
        row: dict[str, Any] = {
            "init": entry.init,
            "seed": int(entry.seed),
            "group": group_of(getattr(entry, "group", None)),
            "run_dir": str(run_dir),
            "status": status,
        }
        for column in ("activation", "depth", "hidden_sizes"):  # architecture, for depth sweeps
            if column in manifest.columns:
                row[column] = getattr(entry, column)
        if status == "complete":
            metrics = _read_json(run_dir / "metrics.json")
            if "test/acc" not in metrics:
                raise RunFileError(f"{run_dir / 'metrics.json'} has no 'test/acc'")
            row.update({k: v for k, v in metrics.items() if k not in ("init", "seed")})
            row.update(_numerics_of(run_dir))
            history = read_history(run_dir / "history.csv")
            histories.append(history.assign(init=entry.init, seed=int(entry.seed), run_dir=str(run_dir)))
            if config is None:
                config = read_config(run_dir / "config.yaml")
        rows.append(row)
    if not histories:
        raise RunFileError(f"{sweep_dir} holds no complete run of its manifest: run the train stage first")
    runs = pd.DataFrame(rows)
    columns = ["init", "seed", "epoch", "step", "metric", "value", "run_dir"]
    history = pd.concat(histories, ignore_index=True)[columns] if histories else pd.DataFrame(columns=columns)
    return SweepRuns(runs=runs, history=history, config=config or {})


# A comma that starts the next `key=`: commas inside a value (`model.hidden_sizes=[256,128]`) do not split.
_NEXT_KEY = re.compile(r",(?=[^,=\[\]{}()]+=)")


def group_of(value: Any) -> str:
    """A manifest's ``group`` cell as text: '' for none (an empty cell reads as NaN; older manifests lack it)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def parse_group(name: str) -> dict[str, str]:
    """``'model.activation=tanh,optimizer.lr=0.003'`` -> ``{'model.activation': 'tanh', 'optimizer.lr': '0.003'}``
    (the run-folder level that holds the swept keys besides init and seed; '' -> {})."""
    pairs = [pair.split("=", 1) for pair in _NEXT_KEY.split(name) if pair]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"manifest group {name!r} is not key=value[,key=value...]")
    return dict(pairs)


def group_name(keys: dict[str, str]) -> str:
    """The inverse of :func:`parse_group`: keys sorted, as the run-folder layout writes them."""
    return ",".join(f"{key}={keys[key]}" for key in sorted(keys))


def with_group_keys(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with the group's keys as leading columns (none for the ungrouped study: its tables keep their
    columns)."""
    keys = parse_group(name)
    return frame.assign(**keys)[[*keys, *frame.columns]] if keys else frame


def split_groups(sweep: SweepRuns, laid_out: Collection[str] = ()) -> list[tuple[str, SweepRuns]]:
    """The one place that turns the manifest into groups: the sweep's runs per value of every swept key besides
    init and seed, sorted by group name (so outputs come in the same order on every machine); a single group is
    named '' (nothing varies between groups). ``laid_out``: keys the caller already shows along an axis of its
    own (the depth report's activation and depth)."""
    names = [
        group_name({k: v for k, v in parse_group(g).items() if k not in laid_out}) for g in sweep.runs.group
    ]
    if len(set(names)) == 1:  # nothing varies between groups: report it as the ungrouped study
        names = [""] * len(names)
    runs = sweep.runs.assign(group=names)
    parts = []
    for name in sorted(set(names)):
        members = runs[runs.group == name].reset_index(drop=True)
        history = sweep.history[sweep.history.run_dir.isin(members.run_dir)].reset_index(drop=True)
        parts.append((name, replace(sweep, runs=members, history=history)))
    return parts


def group_folder(name: str) -> str:
    """A group's figure folder under figures/ ('' for the ungrouped study): the group text, any character a
    path or a Markdown link could misread replaced."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
