"""The report's models: each initializer's median-test-accuracy run, registered in the MLflow model registry.

Results never come from MLflow (initstudy.report.load reads run folders); the registry is where a user finds
a trained network to load (``mlflow.pytorch.load_model("models:/initstudy-he_uniform/1")``, or
``initstudy evaluate models:/...``). Registration is idempotent: a version whose run is the chosen run is
reused, so a re-run of the report adds none. Without a usable store (``logger.offline``, no store yet, a
server that does not answer) the report is written all the same and registered_models.csv says why no
version is named. What the file holds depends on the runs and the registry's versions only (no paths, no run
ids): a fresh ``dvc repro`` writes the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from initstudy.core.paths import repo_root
from initstudy.report.load import SweepRuns, group_folder, with_group_keys
from initstudy.runs import rundir
from initstudy.tracking import model, store

log = logging.getLogger(__name__)

FILE = "registered_models.csv"
PREFIX = "initstudy-"  # registered model names: initstudy-<init>[-<group>]
CHECK_TIMEOUT_S = 5.0  # a report does not wait long for a server that does not answer
REGISTERED = "registered"
COLUMNS = ["init", "seed", "run", "test_acc", "model_name", "model_version", "registry"]


class NoRegistry(Exception):
    """Why no version can be registered; the message is the report's short reason (no path, no URI)."""


def median_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per initializer, the complete run with the median test accuracy (the lower of the two middle ones for an
    even count; ties in accuracy broken by the lower seed)."""
    complete = runs[runs.status == "complete"].sort_values(["init", "test/acc", "seed"], kind="stable")
    rows = [group.iloc[(len(group) - 1) // 2] for _, group in complete.groupby("init", sort=True)]
    return pd.DataFrame(rows).reset_index(drop=True) if rows else complete.iloc[0:0]


def model_name(init: str, group: str = "") -> str:
    return f"{PREFIX}{init}" + (f"-{group}" if group else "")


def register_groups(
    groups: list[tuple[str, SweepRuns]], config: dict[str, Any], previous: Path
) -> pd.DataFrame:
    """registered_models.csv: :func:`register_medians` for each group of the sweep, with the group's keys as
    leading columns; ``previous``: the file as the last report wrote it."""
    before = read_previous(previous)
    frames = [with_group_keys(register_medians(part.runs, config, group_folder(name), before), name)
              for name, part in groups]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def register_medians(
    runs: pd.DataFrame, config: dict[str, Any], group: str = "", previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """registered_models.csv's rows for one group of the sweep: each initializer's median run and its
    registered model version, or the reason there is none. Without a registry, a row of ``previous`` (the
    file as it was) for the same run and model name is kept as it was: the record of a registration made where
    the study was trained, as a clone that pulled the runs (no MLflow store) regenerates the report."""
    chosen = median_runs(runs)
    root = repo_root()
    why = REGISTERED
    try:
        client, experiment_id = open_registry(config, root)
    except NoRegistry as reason:
        log.warning("models not registered: %s", reason)
        client, experiment_id, why = None, None, f"none: {reason}"
    rows = []
    for row in chosen.to_dict("records"):
        name, version, status = model_name(row["init"], group), None, why
        run = rundir.display_path(Path(row["run_dir"]), root)
        if client is None:
            version, status = recorded(previous, name, run, int(row["seed"])) or (version, status)
        else:
            try:
                version = register(client, experiment_id, Path(row["run_dir"]), name, root)
            except NoRegistry as reason:
                status = f"none: {reason}"
            except Exception as error:  # the registry failed (MlflowException, OSError): the report goes on
                log.warning("%s not registered: %s", name, " ".join(str(error).split())[:300])
                status = f"none: the registry failed ({type(error).__name__})"
        rows.append({"init": row["init"], "seed": int(row["seed"]), "run": run, "test_acc": row["test/acc"],
                     "model_name": name, "model_version": version, "registry": status})  # fmt: skip
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"model_version": "Int64"})


def recorded(previous: pd.DataFrame | None, name: str, run: str, seed: int) -> tuple[Any, str] | None:
    """(version, status) of ``previous``'s row for this model name, run folder and seed, if it has one."""
    if previous is None or not set(COLUMNS) <= set(previous.columns):
        return None
    same = previous[(previous.model_name == name) & (previous.run == run) & (previous.seed == seed)]
    if len(same) != 1:
        return None
    version = same.model_version.iloc[0]
    return (None if pd.isna(version) else int(version)), str(same.registry.iloc[0])


def read_previous(path: Path) -> pd.DataFrame | None:
    """registered_models.csv as the last report wrote it; None where there is none or it cannot be read."""
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def open_registry(config: dict[str, Any], root: Path) -> tuple[Any, str]:
    """The study's MLflow store as the runs logged to it (their logger config, else $MLFLOW_TRACKING_URI, else
    the repo's mlflow.db), checked first; never created here."""
    import mlflow
    from omegaconf import OmegaConf

    logger = OmegaConf.create(config.get("logger") or {"tracking_uri": None, "experiment_name": "initstudy"})
    if logger.get("offline"):
        raise NoRegistry(
            "the runs were trained offline (logger.offline); import them, then re-run the report"
        )
    uri = store.tracking_uri(logger, root)
    path = store.sqlite_path(uri)
    if path is not None and not path.is_file():
        raise NoRegistry("no MLflow store")
    try:
        store.check_store(uri, timeout_s=CHECK_TIMEOUT_S)
    except store.TrackingUnavailable:
        raise NoRegistry("the MLflow store is not reachable") from None
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = store.retry(client.get_experiment_by_name, logger.get("experiment_name") or "initstudy")
    if experiment is None:
        raise NoRegistry("the MLflow store has no experiment of this study")
    return client, experiment.experiment_id


def register(client: Any, experiment_id: str, run_dir: Path, name: str, root: Path) -> int:
    """The version of ``name`` whose run is ``run_dir``'s MLflow run: the existing one, else a new one from
    the run's logged model (logged now where the run has none: a grid with logger.log_model off)."""
    run_id = mlflow_run(client, experiment_id, run_dir, root)
    existing = store.retry(client.search_model_versions, f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return min(int(version.version) for version in existing)
    model_id = logged_model(client, run_id)
    if model_id is None:
        model_id = model.log_run_model(client, run_id, run_dir, root).model_id
    ensure_registered_model(client, name)
    with model.tracking_uri(client.tracking_uri):  # MLflow resolves a models:/ source with its fluent URI
        version = store.retry(
            client.create_model_version, name, f"models:/{model_id}", run_id=run_id, model_id=model_id
        )
    log.info("registered %s version %s (%s)", name, version.version, rundir.display_path(run_dir, root))
    return int(version.version)


def mlflow_run(client: Any, experiment_id: str, run_dir: Path, root: Path) -> str:
    """The FINISHED MLflow run of ``run_dir``: provenance.json's (a live run), else the newest tagged with the
    folder (an imported one)."""
    provenance = run_dir / "provenance.json"
    recorded = rundir.read_json(provenance).get("mlflow_run_id") if provenance.is_file() else None
    name = rundir.display_path(run_dir, root)
    found = store.retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.`{store.RUN_DIR_TAG}` = '{name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    ids = [run.info.run_id for run in found]
    if recorded in ids:
        return str(recorded)
    if not ids:
        raise NoRegistry(f"{name} has no finished MLflow run in the store")
    return str(ids[0])


def logged_model(client: Any, run_id: str) -> str | None:
    """The id of the ``model`` logged by ``run_id`` (initstudy.tracking.model), if any."""
    outputs = store.retry(client.get_run, run_id).outputs
    for output in getattr(outputs, "model_outputs", None) or []:
        logged = store.retry(client.get_logged_model, output.model_id)
        if logged.name == model.MODEL_NAME:
            return str(output.model_id)
    return None


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.retry(client.get_registered_model, name)
    except MlflowException:
        store.retry(
            client.create_registered_model,
            name,
            description="The initstudy report's median-test-accuracy run of this initializer",
        )
