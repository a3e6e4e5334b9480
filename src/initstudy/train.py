"""``python -m initstudy.train``: one run, or ``--multirun`` a sweep (Hydra), each logged to MLflow.

Before Hydra launches anything, the numerics profile's environment is set (before torch is imported: this
module imports it only through the runner), every job of the sweep is composed and validated, the tracking
store is checked, and (for a sweep) the manifest and the MLflow parent run are created once, in this process.

    python -m initstudy.train                                   # one run: params.yaml as it is
    python -m initstudy.train init=he_uniform seed=3            # one run, overridden
    python -m initstudy.train --multirun                        # the default sweep (params.yaml)
    python -m initstudy.train -m init=zeros,he_uniform seed=0,1 hydra/launcher=joblib
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from initstudy import numerics, tracking
from initstudy.config import ConfigError, compose_config, repo_root
from initstudy.sweep import Job, plan, write_manifest

log = logging.getLogger("initstudy.train")
SWEEP_SIZE_ENV = "INITSTUDY_SWEEP_SIZE"
LOG_LEVEL_ENV = "INITSTUDY_LOG_LEVEL"


def apply_log_level() -> None:
    """$INITSTUDY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) for the study's own loggers; INFO by default.
    Hydra's own: hydra.job_logging.root.level=WARNING, or hydra/job_logging=disabled."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("initstudy").setLevel(getattr(logging, level, logging.INFO))


@hydra.main(config_path=str(repo_root()), config_name="params", version_base="1.3")
def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job: train into Hydra's output folder. Returns test accuracy (for sweepers that optimise)."""
    hydra_cfg = HydraConfig.get()
    job_index = hydra_cfg.job.num if hydra_cfg.job.get("num") is not None else 0
    apply_log_level()
    # A job process that did not inherit the profile's environment (SLURM with --export=NONE) gets it here,
    # before its first torch import; one that did (basic launcher, loky, submitit) is checked.
    numerics.apply_before_torch(numerics.from_config(cfg.numerics))
    from initstudy.runner import train_run  # imports torch

    size = os.environ.get(SWEEP_SIZE_ENV)
    position = f"run {job_index + 1}/{size} " if size else ""
    metrics = train_run(cfg, Path(hydra_cfg.runtime.output_dir), job_index=job_index, position=position)
    return metrics.get("test/acc")


def sweep_id(jobs: Sequence[Job]) -> str:
    """Identity of a sweep: its jobs and their config hashes. A restarted sweep finds its parent run by it."""
    text = "\n".join(f"{job.run_dir}:{job.config_hash}" for job in jobs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def mlflow_parent(jobs: Sequence[Job], multirun: bool, overrides: Sequence[str]) -> Iterator[None]:
    """Create (or reuse, for a restarted sweep) the experiment and the sweep's parent run; end it after."""
    root = repo_root()
    cfg = compose_config(list(jobs[0].overrides))
    if cfg.logger.offline:
        yield
        return
    uri = tracking.tracking_uri(cfg.logger, root)
    tracking.check_reachable(uri)
    experiment_id = tracking.ensure_experiment(uri, cfg.logger.experiment_name, root)
    if not multirun:
        yield
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    identity = sweep_id(jobs)
    previous = client.search_runs(
        [experiment_id], filter_string=f"tags.`{tracking.SWEEP_ID_TAG}` = '{identity}'", max_results=1
    )
    if previous:
        run = previous[0]
        client.update_run(run.info.run_id, status="RUNNING")
    else:
        run = client.create_run(
            experiment_id,
            run_name=f"sweep {len(jobs)} runs {identity[:8]}",
            tags={
                tracking.SWEEP_ID_TAG: identity,
                "overrides": " ".join(overrides),
                **tracking.git_state(root),
            },
        )
    os.environ[tracking.PARENT_RUN_ENV] = run.info.run_id
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
        os.environ.pop(tracking.PARENT_RUN_ENV, None)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        sys.argv = [sys.argv[0], *argv]
        hydra_job()
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        numerics.apply_for_sweep(args.overrides, args.multirun)
        jobs = plan(args.overrides, args.multirun)
        with mlflow_parent(jobs, args.multirun, args.overrides):
            sweep_dir = jobs[0].sweep_dir
            if sweep_dir is not None:
                write_manifest(jobs, sweep_dir)
                os.environ[SWEEP_SIZE_ENV] = str(len(jobs))
                log.info("sweep of %d runs -> %s", len(jobs), sweep_dir)
            sys.argv = [sys.argv[0], *argv]
            hydra_job()
    except (ConfigError, tracking.TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
