"""Reading the sweep's runs (and only those) from their folders; MLflow is never needed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from initstudy import rundir
from initstudy.sweep import read_manifest


class RunFileError(ValueError):
    """A run file that should exist is missing or cannot be parsed; the message names the file."""


def run_folder(sweep_dir: Path, entry: str) -> Path:
    """A manifest entry's folder, which must lie inside the sweep folder (symlinks resolved)."""
    relative = Path(str(entry))
    folder = sweep_dir / relative
    inside = Path(os.path.realpath(folder))
    if (
        relative.is_absolute()
        or ".." in relative.parts
        or Path(os.path.realpath(sweep_dir)) not in inside.parents
    ):
        raise RunFileError(f"{sweep_dir / 'manifest.csv'} lists {entry!r}, which is outside {sweep_dir}")
    return folder


@dataclass
class SweepRuns:
    runs: pd.DataFrame  # one row per manifest entry: init, seed, status, and the run's metrics
    history: pd.DataFrame  # long: init, seed, epoch, step, metric, value
    config: dict[str, Any]  # resolved config of the first complete run


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing (the run is marked complete)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} is not valid JSON: {error}") from None


def _read_history(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing (the run is marked complete)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} is not a readable CSV: {' '.join(str(error).split())}") from None
    expected = {"epoch", "step", "metric", "value"}
    if not expected <= set(frame.columns):
        raise RunFileError(f"{path} lacks column(s) {', '.join(sorted(expected - set(frame.columns)))}")
    return _numeric_history(frame, path)


def _numerics_of(run_dir: Path) -> dict[str, str]:
    """The device and numerics profile a run was made with (its numerics.json; "unknown" for older runs)."""
    path = run_dir / "numerics.json"
    described = _read_json(path) if path.is_file() else {}
    return {"device": described.get("device", "unknown"), "numerics": described.get("profile", "unknown")}


def run_status(run_dir: Path, identity: str | None) -> str:
    """complete | stale (complete, but for another config, code or data) | incomplete (failed, killed, never
    run, or a damaged marker). The same rule as resume: :func:`initstudy.rundir.is_complete`."""
    if isinstance(identity, str) and rundir.is_complete(run_dir, identity):
        return "complete"
    marker = rundir.read_marker(run_dir)
    if marker is not None and marker.get("identity") == identity:  # marked complete, yet a file is gone
        missing = next(name for name in rundir.RESULT_FILES if not (run_dir / name).is_file())
        raise RunFileError(f"{run_dir / missing} is missing (the run is marked complete)")
    return "stale" if marker is not None else "incomplete"


def _numeric_history(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = frame["value"].notna() & values.isna()
    if bad.any():
        row = bad.idxmax()
        raise RunFileError(f"{path} has a non-numeric value {frame['value'][row]!r} in row {row + 2}")
    for column in ("epoch", "step"):
        if pd.to_numeric(frame[column], errors="coerce").isna().any():
            raise RunFileError(f"{path} has a non-numeric {column}")
    return frame.assign(value=values)


def load_sweep(sweep_dir: Path) -> SweepRuns:
    manifest = read_manifest(sweep_dir)
    rows, histories, config = [], [], None
    for entry in manifest.itertuples(index=False):
        run_dir = run_folder(sweep_dir, entry.run_dir)
        status = run_status(run_dir, getattr(entry, "identity", None))
        row: dict[str, Any] = {
            "init": entry.init,
            "seed": int(entry.seed),
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
            history = _read_history(run_dir / "history.csv")
            histories.append(history.assign(init=entry.init, seed=int(entry.seed), run_dir=str(run_dir)))
            if config is None:
                config_path = run_dir / "config.yaml"
                try:
                    config = yaml.safe_load(config_path.read_text())
                except (OSError, yaml.YAMLError) as error:
                    raise RunFileError(f"{config_path} is unreadable: {error}") from None
        rows.append(row)
    if not histories:
        raise RunFileError(f"{sweep_dir} holds no complete run of its manifest: run the train stage first")
    runs = pd.DataFrame(rows)
    columns = ["init", "seed", "epoch", "step", "metric", "value", "run_dir"]
    history = pd.concat(histories, ignore_index=True)[columns] if histories else pd.DataFrame(columns=columns)
    return SweepRuns(runs=runs, history=history, config=config or {})
