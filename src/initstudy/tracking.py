"""MLflow: where the store is, checking it answers, the study's experiment and a sweep's parent run.

The launching process creates the store, the experiment and the parent run once (several processes creating
a fresh SQLite store at once race); jobs only add child runs, tagged ``mlflow.parentRunId``.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig

PARENT_RUN_ENV = "INITSTUDY_MLFLOW_PARENT_RUN_ID"
SWEEP_ID_TAG = "initstudy.sweep_id"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer."""


def tracking_uri(logger_cfg: DictConfig, root: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the embedded SQLite store in the repo (absolute)."""
    return (
        logger_cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    )


def artifact_location(uri: str, root: Path) -> str | None:
    """Artifacts of a local store go next to it; a server decides for itself."""
    return (root / "mlartifacts").as_uri() if uri.startswith("sqlite:") or uri.startswith("file:") else None


def check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """Fail within ``timeout_s`` if an HTTP tracking server does not answer its health endpoint."""
    if not uri.startswith(("http://", "https://")):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it, unset MLFLOW_TRACKING_URI "
            f"for the local store, or train offline with logger=offline"
        ) from None


def ensure_experiment(uri: str, name: str, root: Path) -> str:
    """Create the store (once, in the launching process: concurrent creation races) and the experiment.

    Parallel jobs then only add runs and metrics; MLflow gives every SQLite session a 20 s busy timeout,
    so a writer that meets another's lock waits instead of failing, and jobs write once per epoch.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # creates and migrates a new store
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, root))


def git_state(root: Path) -> dict[str, str]:
    """Commit and dirtiness of the work tree, for provenance tags ('unknown' outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def end_interrupted_runs(client, experiment_id: str, parent_run_id: str, run_name: str) -> int:
    """Mark as KILLED the child runs of this sweep and name still RUNNING: a killed earlier attempt.

    Called by a job before it starts its own child run, so that the sweep holds one finished run per
    (init, seed) and no run stays 'running' forever."""
    stale = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.run_name = '{run_name}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    for run in stale:
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(stale)
