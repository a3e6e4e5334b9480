"""Reading a finished sweep's run folders: where each manifest entry lives, and whether each run is
complete, stale (made for another config, code or data) or incomplete, so that a report reads only
finished runs of the current sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from initstudy.runs import rundir


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing (the run is marked complete)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path} is not valid JSON: {error}") from None


def _numerics_of(run_dir: Path) -> dict[str, str]:
    """The device and numerics profile a run was made with (its numerics.json; "unknown" for older runs)."""
    path = run_dir / "numerics.json"
    described = _read_json(path) if path.is_file() else {}
    return {"device": described.get("device", "unknown"), "numerics": described.get("profile", "unknown")}


def run_status(run_dir: Path, identity: str | None) -> str:
    """complete | stale (complete, but for another config, code or data) | incomplete (failed, killed, never
    run, or a damaged marker). The same rule as resume: :func:`initstudy.runs.rundir.is_complete`."""
    if isinstance(identity, str) and rundir.is_complete(run_dir, identity):
        return "complete"
    marker = rundir.read_marker(run_dir)
    if marker is not None and marker.get("identity") == identity:  # marked complete, yet a file is gone
        missing = next(name for name in rundir.RESULT_FILES if not (run_dir / name).is_file())
        raise RunFileError(f"{run_dir / missing} is missing (the run is marked complete)")
    return "stale" if marker is not None else "incomplete"


def read_history(path: Path) -> pd.DataFrame:
    """A run's history.csv: the columns epoch, step, metric, value, every value numeric (NaN allowed); a
    one-line :class:`RunFileError` naming the file otherwise."""
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


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; a one-line :class:`RunFileError` naming the file otherwise."""
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing (the run is marked complete)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RunFileError(f"{path} is not readable YAML: {problem}") from None
    if not isinstance(config, dict):
        raise RunFileError(
            f"{path} must be a YAML mapping (a resolved run config), got {type(config).__name__}"
        )
    return config
