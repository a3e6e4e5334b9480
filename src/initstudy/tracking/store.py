"""MLflow: where the store is, checking it before anything runs, and one way to log a run.

The launching process creates the store, the experiment and the parent run once (several processes creating
a fresh SQLite store at once race); jobs only add child runs, tagged ``mlflow.parentRunId``. Training and
``mlflow_import`` log a run through the same functions (:func:`log_params`, :func:`log_history`,
:func:`log_final`), so an imported run looks exactly like a live one. A child run is FINISHED only after its
run folder is complete; every call is retried while SQLite reports a transient lock.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import socket
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import tenacity
from omegaconf import DictConfig

from initstudy.core.provenance import git_state
from initstudy.tracking import liveness

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "INITSTUDY_MLFLOW_PARENT_RUN_ID"
SWEEP_ID_TAG = "initstudy.sweep_id"
RUN_DIR_TAG = "initstudy.run_dir"
JOB_LOG = "train.log"  # Hydra's job log in the run folder (conf/hydra/job_logging/study.yaml)
# Numbers of metrics.json that are not measurements: logged as params and tags, not as metrics.
NOT_METRICS = ("seed",)
BATCH_LIMIT = 100  # params per log_batch request (MLflow's limit); metrics allow 1000
# The schemes MLflow takes as a tracking URI; a database's may name its driver (postgresql+psycopg2).
DATABASES = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # with their default ports
OTHER_SCHEMES = ("sqlite", "http", "https", "file", "databricks", "databricks-uc", "uc")
ALLOWED_URIS = (
    "sqlite:///<file>, http(s)://<server>, postgresql|mysql|mssql[+driver]://<host>/<db>, file:<folder>"
)
# SQLAlchemy's drivers per database (URI name: module), to name the ones installed here when one is missing.
DRIVERS = {
    "postgresql": {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"},
    "mysql": {"mysqldb": "MySQLdb", "pymysql": "pymysql", "mysqlconnector": "mysql.connector"},
    "mssql": {"pyodbc": "pyodbc", "pymssql": "pymssql"},
}
T = TypeVar("T")


class TrackingUnavailable(RuntimeError):
    """The MLflow store cannot be used (server down, damaged database); the message is one line."""


# ---- where, and whether it can be used ----------------------------------------------------------------


def tracking_uri(logger_cfg: DictConfig, root: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the embedded SQLite store in the repo (absolute)."""
    return (
        logger_cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    )


def redact(uri: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://***@host``: what logs and messages may show of a URI."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", uri)


def artifact_location(uri: str, root: Path) -> str | None:
    """Artifacts of a local store go next to it; a server decides for itself."""
    return (root / "mlartifacts").as_uri() if uri.startswith("sqlite:") or uri.startswith("file:") else None


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(urllib.parse.unquote(uri[len("sqlite:///") :]))


def check_store(uri: str, timeout_s: float = 30.0) -> None:
    """Before anything runs, one line if the store cannot be used: an HTTP server answers its health endpoint
    within ``timeout_s``; a database URI names a scheme MLflow knows, a driver that is installed and a server
    that accepts a connection within ``timeout_s`` (MLflow itself would retry for a minute or two, then print
    a traceback); an existing SQLite store is a readable database. A refused connection fails at once; the
    bound is for a server that does not answer, and is generous: a busy server on a loaded machine (the
    study's own jobs beside it) may take seconds to answer its first request."""
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path)
        return
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
    elif scheme.split("+", 1)[0] in DATABASES:
        _check_database(uri, timeout_s)
    elif scheme and scheme not in OTHER_SCHEMES:
        raise TrackingUnavailable(
            f"MLflow tracking URI {redact(uri)} has an unknown scheme {scheme!r}; allowed: {ALLOWED_URIS}"
        )


def _check_http(uri: str, timeout_s: float) -> None:
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {redact(uri)} is not reachable ({redact(str(reason))}); start it, unset "
            "MLFLOW_TRACKING_URI for the local store, or train offline with logger=offline"
        ) from None


def _check_database(uri: str, timeout_s: float) -> None:
    """The URI parses, its driver imports, its server accepts a TCP connection (a Unix socket: not probed)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise TrackingUnavailable(
            f"MLflow tracking URI {redact(uri)} is not a database URL ({redact(str(error))}); allowed: {ALLOWED_URIS}"
        ) from None
    database = url.get_backend_name()
    try:
        dialect.import_dbapi()
    except ImportError as error:
        missing = repr(error.name or dialect.driver)
        if "+" not in url.drivername:
            missing += f" (SQLAlchemy's default for {database}://)"
        installed = [
            f"{database}+{name}://" for name, module in DRIVERS.get(database, {}).items() if _imports(module)
        ]
        instead = f"name an installed one in the URI: {', '.join(installed)}" if installed else "install it"
        raise TrackingUnavailable(
            f"MLflow tracking URI {redact(uri)} needs the database driver {missing}, which is not installed; {instead}"
        ) from None
    if url.host is None:
        return
    port = url.port or DATABASES[database]
    try:
        socket.create_connection((url.host, port), timeout=timeout_s).close()
    except OSError as error:
        raise TrackingUnavailable(
            f"MLflow tracking URI {redact(uri)}: no database server answers at {url.host}:{port} "
            f"({error.strerror or error}); start it, unset MLFLOW_TRACKING_URI for the local store, or train "
            "offline with logger=offline"
        ) from None


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _check_sqlite(path: Path) -> None:
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {path} cannot be created: {parent} is not writable")
        return
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
        try:
            result = connection.execute("PRAGMA quick_check").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise TrackingUnavailable(
            f"MLflow store {path} is not a readable SQLite database ({error}); move it aside or set "
            "logger.tracking_uri"
        ) from None
    if not result or result[0] != "ok":
        raise TrackingUnavailable(
            f"MLflow store {path} is damaged (quick_check: {result[0] if result else 'no answer'}); move it "
            "aside or set logger.tracking_uri"
        )


def _store_busy(error: BaseException) -> bool:
    """SQLite's transient lock, whichever layer wraps it (MlflowException around SQLAlchemy's
    OperationalError): only its text says so."""
    return "database is locked" in str(error) or "database is busy" in str(error)


def _log_wait(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("MLflow store busy (%s); retrying in %.1f s", type(error).__name__, wait)


# While SQLite is locked by another process: 8 tries, waits 0.2 s doubling to at most 5 s (16.2 s in all);
# any other error, a refused connection included, is raised at once, as raised (not tenacity's RetryError).
STORE_BUSY_RETRYING = tenacity.Retrying(
    retry=tenacity.retry_if_exception(_store_busy),
    stop=tenacity.stop_after_attempt(8),
    wait=tenacity.wait_exponential(multiplier=0.2, max=5.0),
    before_sleep=_log_wait,
    reraise=True,
)


def retry(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` under :data:`STORE_BUSY_RETRYING` (a fresh copy per call: one call's
    attempts never count against another's)."""
    return STORE_BUSY_RETRYING.copy()(call, *args, **kwargs)


def ensure_experiment(uri: str, name: str, root: Path) -> str:
    """Create the store (once, in the launching process: concurrent creation races) and the experiment; an
    existing experiment's runs left RUNNING by a process that is gone are marked KILLED first (every start of
    training and of the import passes here)."""
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        retry(client.search_experiments, max_results=1)  # creates and migrates a new store
        experiment = retry(client.get_experiment_by_name, name)
        if experiment is None:
            return retry(client.create_experiment, name, artifact_location=artifact_location(uri, root))
        end_orphaned_runs(client, experiment.experiment_id)
        return experiment.experiment_id
    except Exception as error:
        message = " ".join(redact(str(error)).split("\n[SQL:")[0].split())[:300]  # not SQLAlchemy's statement
        raise TrackingUnavailable(f"MLflow store {redact(uri)} cannot be used: {message}") from None


# ---- one way to log a run (training and import) -------------------------------------------------------


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params (dotted keys; MLflow truncates at 250 characters)."""
    container = {k: v for k, v in config.items() if k not in ("download", "hydra")}
    flat = pd.json_normalize(container, sep=".").iloc[0].to_dict() if container else {}
    return {key: redact(str(value))[:250] for key, value in flat.items()}


def log_params(client: Any, run_id: str, config: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in flat_params(config).items()]
    for start in range(0, len(params), BATCH_LIMIT):
        retry(client.log_batch, run_id, params=params[start : start + BATCH_LIMIT])


def log_points(client: Any, run_id: str, points: Iterable[tuple[str, float, int]]) -> None:
    """(metric, value, step) points in batches; non-finite values are left out (MLflow rejects them)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, int(step)) for name, value, step in points
               if math.isfinite(float(value))]  # fmt: skip
    for start in range(0, len(metrics), 1000):
        retry(client.log_batch, run_id, metrics=metrics[start : start + 1000])


def history_points(history: pd.DataFrame) -> list[tuple[str, float, int]]:
    """history.csv as MLflow points: per-epoch metrics at their epoch, the interval loss at its step."""
    return [
        (row.metric, float(row.value), int(row.step if row.metric.endswith("_step") else row.epoch))
        for row in history.itertuples(index=False)
    ]


def log_history(client: Any, run_id: str, history: pd.DataFrame) -> None:
    log_points(client, run_id, history_points(history))


def log_final(client: Any, run_id: str, metrics: Mapping[str, Any], run_dir: Path, root: Path) -> None:
    """The run's final metrics (``final/...``), the divergence tag, the run folder as artifacts (its results
    and its initial and final weights), its data (``log_input``) and, where ``logger.log_model`` is on, its
    network as an ``mlflow.pytorch`` model (initstudy.tracking.model). The seed is a param and a tag, not a
    metric: it is not a measurement."""
    from mlflow.entities import RunTag

    from initstudy.tracking import model

    numeric = [(f"final/{key}", float(value), 0) for key, value in metrics.items()
               if isinstance(value, int | float) and not isinstance(value, bool) and key not in NOT_METRICS]  # fmt: skip
    # The test set's one evaluation, also under its plain name (at the last epoch) for the run-comparison view.
    epochs = int(metrics.get("epochs_completed") or 0)
    numeric += [(key, float(metrics[key]), epochs) for key in ("test/acc", "test/loss")
                if isinstance(metrics.get(key), int | float)]  # fmt: skip
    log_points(client, run_id, numeric)
    retry(client.log_batch, run_id, tags=[RunTag("diverged", str(metrics.get("diverged")).lower())])
    retry(client.log_artifacts, run_id, str(run_dir))
    config = model.read_config(run_dir)
    retry(model.log_data, client, run_id, config, root)
    if logs_model(config):
        model.log_run_model(client, run_id, run_dir, root)  # not retried: a retry would log a second model


def logs_model(config: Mapping[str, Any]) -> bool:
    """``logger.log_model`` of the run's config; a run made before the option existed: on, its default."""
    return bool((config.get("logger") or {}).get("log_model", True))


def log_job_log(client: Any, run_id: str, run_dir: Path) -> None:
    """The run folder's job log (train.log) as the run's artifact, replacing the copy :func:`log_final` sent
    while the run was still writing it; its handlers flushed first."""
    path = run_dir / JOB_LOG
    if not path.is_file():
        return
    for handler in logging.getLogger().handlers:
        handler.flush()
    retry(client.log_artifact, run_id, str(path))


def run_tags(init: str, seed: int, run_dir: str, root: Path, extra: Mapping[str, str] = ()) -> dict[str, str]:
    tags = {"initializer": init, "seed": str(seed), RUN_DIR_TAG: run_dir, **git_state(root), **dict(extra),
            **liveness.owner_tags()}  # fmt: skip
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


def set_status(client: Any, run_id: str, status: str) -> None:
    retry(client.set_terminated, run_id, status=status)


def end_interrupted_runs(client: Any, experiment_id: str, run_dir: str, keep: str | None = None) -> int:
    """Mark as KILLED the runs of this run folder still RUNNING (a killed earlier attempt), except ``keep``.

    Called before a job starts its own child run (single runs and sweeps alike), so that every run folder
    has one FINISHED run and no run stays 'running' forever."""
    stale = retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}' and attributes.status = 'RUNNING'",
    )
    stale = [run for run in stale if run.info.run_id != keep]
    for run in stale:
        set_status(client, run.info.run_id, "KILLED")
    return len(stale)


def confirm_finished(client: Any, run_id: str | None) -> None:
    """A complete run folder whose MLflow run was left RUNNING (killed between the marker and the status), or
    marked KILLED since by a start that found its process gone (:func:`end_orphaned_runs`): the marker records
    this run, so it finished."""
    if not run_id:
        return
    try:
        run = retry(client.get_run, run_id)
    except Exception:  # deleted, or from another store
        return
    if run.info.status in ("RUNNING", "KILLED"):
        set_status(client, run_id, "FINISHED")


# ---- runs whose process is gone (initstudy.tracking.liveness) ------------------------------------------------


def end_orphaned_runs(
    client: Any, experiment_id: str, parent: str | None = None, wait_s: float = 0.0
) -> list[str]:
    """Mark KILLED the RUNNING runs of the experiment (or only ``parent``'s children) whose owning process is
    gone; the names of those marked. ``wait_s``: how long an owner on this host may take to die (a launcher's
    workers, just stopped with it) before it is taken to be running still, and left alone."""
    query = "attributes.status = 'RUNNING'"
    if parent is not None:
        query += f" and tags.`mlflow.parentRunId` = '{parent}'"
    running = retry(client.search_runs, [experiment_id], filter_string=query, max_results=10_000)
    deadline = time.monotonic() + wait_s
    ended = []
    for run in running:
        alive = liveness.owner_alive(run.data.tags)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = liveness.owner_alive(run.data.tags)
        if alive is False:
            set_status(client, run.info.run_id, "KILLED")
            ended.append(run.info.run_name or run.info.run_id)
    if ended:
        log.info("marked KILLED in MLflow, their process gone: %s", ", ".join(sorted(ended)))
    return ended


def only_stopped(client: Any, experiment_id: str, parent: str, since_ms: int) -> bool:
    """Whether ``parent``'s children started since ``since_ms`` include a KILLED run and no FAILED one: the
    sweep ended because its jobs' processes were stopped (a signal to a worker, not to the launcher), which is
    KILLED, not FAILED, for the parent too."""
    query = f"tags.`mlflow.parentRunId` = '{parent}' and attributes.start_time >= {since_ms}"
    children = retry(client.search_runs, [experiment_id], filter_string=query, max_results=10_000)
    ended = {run.info.status for run in children}
    return "KILLED" in ended and "FAILED" not in ended


def claim(client: Any, run_id: str) -> None:
    """This process owns ``run_id`` from now on (a restarted sweep reusing its parent run)."""
    from mlflow.entities import RunTag

    tags = [RunTag(key, value) for key, value in liveness.owner_tags().items()]
    retry(client.log_batch, run_id, tags=tags)


def heartbeat(client: Any, run_id: str) -> liveness.Heartbeat:
    """The owner's heartbeat on ``run_id`` until ``.stop()``: how a run on another host shows it is alive."""
    return liveness.Heartbeat(lambda: client.set_tag(run_id, liveness.HEARTBEAT_TAG, str(int(time.time()))))
