"""``python -m initstudy.mlflow_import [--runs runs]``: log run folders trained offline into MLflow.

For sweeps run with ``logger=offline`` (no server reachable, a cluster without network): each complete run
folder listed in the manifest becomes a child run of one parent, with the same names, params, metrics
(history.csv, with their steps), tags and artifacts as an online run. A run already imported (same run
folder and config hash) is skipped, so the command can be repeated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from initstudy import tracking
from initstudy.config import ConfigError, compose_config, repo_root
from initstudy.report.load import run_status
from initstudy.sweep import read_manifest

IMPORT_TAG = "initstudy.imported_from"


def flat(config: dict) -> dict[str, str]:
    return {k: str(v)[:250] for k, v in pd.json_normalize(config, sep=".").iloc[0].to_dict().items()}


def import_sweep(runs_dir: Path, uri: str, experiment_name: str) -> tuple[int, int]:
    """Returns (imported, skipped)."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    root = repo_root()
    client = mlflow.MlflowClient(tracking_uri=uri)
    tracking.check_reachable(uri)
    experiment_id = tracking.ensure_experiment(uri, experiment_name, root)
    manifest = read_manifest(runs_dir)
    parent = None
    imported = skipped = 0
    for entry in manifest.itertuples(index=False):
        run_dir = runs_dir / entry.run_dir
        if run_status(run_dir, entry.config_hash) != "complete":
            continue
        origin = f"{run_dir.resolve()}@{entry.config_hash}"
        if client.search_runs(
            [experiment_id], filter_string=f"tags.`{IMPORT_TAG}` = '{origin}'", max_results=1
        ):
            skipped += 1
            continue
        if parent is None:
            parent = client.create_run(
                experiment_id, run_name=f"import of {runs_dir}", tags=tracking.git_state(root)
            )
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = pd.read_csv(run_dir / "history.csv")
        run = client.create_run(
            experiment_id,
            run_name=f"{entry.init}/seed_{entry.seed}",
            tags={"mlflow.parentRunId": parent.info.run_id, "initializer": entry.init, "seed": str(entry.seed),
                  IMPORT_TAG: origin, **tracking.git_state(root)},
        )  # fmt: skip
        now = int(time.time() * 1000)
        points = [
            Metric(
                row.metric,
                float(row.value),
                now,
                int(row.step if row.metric == "train/loss_step" else row.epoch),
            )
            for row in history.itertuples(index=False)
            if pd.notna(row.value) and abs(float(row.value)) != float("inf")
        ]
        points += [Metric(f"final/{k}", float(v), now, 0) for k, v in metrics.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)]  # fmt: skip
        params = [Param(k, v) for k, v in flat({k: v for k, v in config.items() if k != "download"}).items()]
        for start in range(0, max(len(points), len(params)), 100):
            client.log_batch(run.info.run_id, metrics=points[start : start + 100] if start < len(points) else [],
                             params=params[start : start + 100] if start < len(params) else [],
                             tags=[RunTag("diverged", str(metrics.get("diverged")).lower())] if start == 0 else [])  # fmt: skip
        client.log_artifacts(run.info.run_id, str(run_dir))
        client.set_terminated(run.info.run_id, "FINISHED")
        imported += 1
    if parent is not None:
        client.set_terminated(parent.info.run_id, "FINISHED")
    return imported, skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m initstudy.mlflow_import", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="sweep folder holding manifest.csv")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. logger.tracking_uri=http://...")
    args = parser.parse_args(argv)
    try:
        cfg = compose_config(args.overrides)
        uri = tracking.tracking_uri(cfg.logger, repo_root())
        imported, skipped = import_sweep(args.runs, uri, cfg.logger.experiment_name)
    except (ConfigError, tracking.TrackingUnavailable, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"imported {imported} run(s) into {uri}; {skipped} already there")


if __name__ == "__main__":
    main()
