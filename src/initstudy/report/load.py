"""Reading the sweep's runs (and only those) from their folders; MLflow is never needed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from initstudy.runner import COMPLETION_MARKER
from initstudy.sweep import read_manifest


class RunFileError(ValueError):
    """A run file that should exist is missing or cannot be parsed; the message names the file."""


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
    return frame


def _numerics_of(run_dir: Path) -> dict[str, str]:
    """The device and numerics profile a run was made with (its numerics.json; "unknown" for older runs)."""
    path = run_dir / "numerics.json"
    described = _read_json(path) if path.is_file() else {}
    return {"device": described.get("device", "unknown"), "numerics": described.get("profile", "unknown")}


def run_status(run_dir: Path, expected_hash: str | None) -> str:
    """complete | stale (complete, but for another config) | incomplete (failed, killed or never run)."""
    marker = run_dir / COMPLETION_MARKER
    if not marker.is_file():
        return "incomplete"
    recorded = _read_json(marker).get("config_hash")
    if expected_hash is not None and isinstance(expected_hash, str) and recorded != expected_hash:
        return "stale"
    return "complete"


def load_sweep(sweep_dir: Path) -> SweepRuns:
    manifest = read_manifest(sweep_dir)
    rows, histories, config = [], [], None
    for entry in manifest.itertuples(index=False):
        run_dir = sweep_dir / entry.run_dir
        status = run_status(run_dir, getattr(entry, "config_hash", None))
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
    runs = pd.DataFrame(rows)
    columns = ["init", "seed", "epoch", "step", "metric", "value", "run_dir"]
    history = pd.concat(histories, ignore_index=True)[columns] if histories else pd.DataFrame(columns=columns)
    return SweepRuns(runs=runs, history=history, config=config or {})
