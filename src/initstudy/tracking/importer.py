"""``python -m initstudy.tracking.importer [--runs runs]``: log run folders trained offline into MLflow.

For sweeps run with ``logger=offline`` (no server reachable, a cluster without network): each complete run
folder listed in the manifest becomes a child run of one parent, with the same names, params, metrics
(history.csv, with their steps), tags and artifacts as an online run. A run already imported (same run
folder and config hash) is skipped, so the command can be repeated.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from initstudy.config.compose import compose_config
from initstudy.core import provenance, signals
from initstudy.core.errors import ConfigError
from initstudy.core.faults import pause_point
from initstudy.core.paths import repo_root
from initstudy.runs import rundir
from initstudy.runs.manifest import read_manifest
from initstudy.runs.results import RunFileError, read_config, read_history, run_folder, run_status
from initstudy.tracking import liveness, store

IMPORT_TAG = "initstudy.imported_from"


def import_sweep(runs_dir: Path, uri: str, experiment_name: str) -> tuple[int, int]:
    """Returns (imported, skipped). An import killed half-way left its child RUNNING: that one is marked
    KILLED and imported again, so that every run folder ends with exactly one FINISHED imported run."""
    import mlflow

    root = repo_root()
    check_sources(runs_dir)
    store.check_store(uri)
    experiment_id = store.ensure_experiment(uri, experiment_name, root)  # creates the store; one-line errors
    client = mlflow.MlflowClient(tracking_uri=uri)
    manifest = read_manifest(runs_dir)
    parent = None
    imported = skipped = 0
    for entry in manifest.itertuples(index=False):
        run_dir = run_folder(runs_dir, entry.run_dir)
        identity = getattr(entry, "identity", None)
        if run_status(run_dir, identity) != "complete":
            continue
        origin = f"{run_dir.resolve()}@{identity}"
        earlier = store.retry(
            client.search_runs, [experiment_id], filter_string=f"tags.`{IMPORT_TAG}` = '{origin}'"
        )
        if any(run.info.status == "FINISHED" for run in earlier):
            skipped += 1
            continue
        for run in earlier:  # a killed import's half-logged run
            if run.info.status == "RUNNING":
                store.set_status(client, run.info.run_id, "KILLED")
        if parent is None:
            parent = store.retry(
                client.create_run,
                experiment_id,
                run_name=f"import of {runs_dir}",
                tags={**provenance.git_state(root), **liveness.owner_tags()},
            )
            os.environ[store.PARENT_RUN_ENV] = parent.info.run_id
        try:
            log_one(client, experiment_id, entry, run_dir, origin, root)
        except BaseException as error:
            end_import(client, parent.info.run_id, error)
            raise
        imported += 1
    if parent is not None:
        end_import(client, parent.info.run_id, None)
    return imported, skipped


def check_sources(runs_dir: Path) -> None:
    """Every complete run of the manifest is readable (config, metrics, history) before the store is touched:
    a damaged source stops the import with one line naming the file, and no half-imported sweep."""
    for entry in read_manifest(runs_dir).itertuples(index=False):
        run_dir = run_folder(runs_dir, entry.run_dir)
        if run_status(run_dir, getattr(entry, "identity", None)) == "complete":
            read_config(run_dir / "config.yaml")
            rundir.read_json(run_dir / "metrics.json")
            read_history(run_dir / "history.csv")


def end_import(client, parent_id: str, error: BaseException | None) -> None:
    """The import's parent FINISHED, or KILLED (a stop signal) / FAILED with the child it was logging."""
    status = "FINISHED" if error is None else "KILLED" if signals.is_interruption(error) else "FAILED"
    if error is not None:
        for run in store.retry(client.search_runs, [client.get_run(parent_id).info.experiment_id],
                               filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                               "attributes.status = 'RUNNING'"):  # fmt: skip
            store.set_status(client, run.info.run_id, status)
    store.set_status(client, parent_id, status)
    os.environ.pop(store.PARENT_RUN_ENV, None)


def log_one(client, experiment_id: str, entry, run_dir: Path, origin: str, root: Path) -> None:
    """One run folder as a child run, through the same functions a live run logs with."""
    config = read_config(run_dir / "config.yaml")
    metrics = rundir.read_json(run_dir / "metrics.json")
    history = read_history(run_dir / "history.csv")
    name = f"{entry.init}/seed_{entry.seed}"
    tags = store.run_tags(
        entry.init, int(entry.seed), rundir.display_path(run_dir, root), root, {IMPORT_TAG: origin}
    )
    run = store.retry(client.create_run, experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    store.log_params(client, run_id, config or {})
    store.log_history(client, run_id, history)
    store.log_final(client, run_id, metrics, run_dir, root)
    pause_point("import-run")
    store.set_status(client, run_id, "FINISHED")


@signals.entry_point("initstudy.tracking.importer")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m initstudy.tracking.importer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="sweep folder holding manifest.csv")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. logger.tracking_uri=http://...")
    args = parser.parse_args(argv)
    try:
        cfg = compose_config(args.overrides)
        uri = store.tracking_uri(cfg.logger, repo_root())
        imported, skipped = import_sweep(args.runs, uri, cfg.logger.experiment_name)
    except (ConfigError, store.TrackingUnavailable, RunFileError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"imported {imported} run(s) into {store.redact(uri)}; {skipped} already there")


if __name__ == "__main__":
    main()
