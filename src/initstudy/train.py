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
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from initstudy import locking, numerics, rundir, tracking
from initstudy.config import CONFIG_GROUPS_DIR, ConfigError, check_accelerator, compose_config, repo_root
from initstudy.rundir import run_identity
from initstudy.sweep import Job, plan, write_manifest

log = logging.getLogger("initstudy.train")
SWEEP_SIZE_ENV = "INITSTUDY_SWEEP_SIZE"
LOG_LEVEL_ENV = "INITSTUDY_LOG_LEVEL"
# Where a job's run folder is: Hydra writes each job into a staging folder; these name the final place.
RUN_DIR_ENV = "INITSTUDY_RUN_DIR"  # a single run: its run folder (absolute)
SWEEP_ROOT_ENV = "INITSTUDY_SWEEP_ROOT"  # a sweep: its root (absolute); a job's folder is <root>/<subdir>


def apply_log_level() -> None:
    """$INITSTUDY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) for the study's own loggers; INFO by default.
    Hydra's own: hydra.job_logging.root.level=WARNING, or hydra/job_logging=disabled."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    logging.getLogger("initstudy").setLevel(getattr(logging, level, logging.INFO))


def final_dir(hydra_cfg: DictConfig) -> Path:
    """The job's run folder; Hydra's own output folder is its staging folder."""
    sweep_root = os.environ.get(SWEEP_ROOT_ENV)
    if hydra_cfg.mode == RunMode.MULTIRUN and sweep_root:
        return Path(sweep_root) / hydra_cfg.sweep.subdir
    single = os.environ.get(RUN_DIR_ENV)
    if hydra_cfg.mode == RunMode.RUN and single:
        return Path(single)
    raise RuntimeError("start training with `python -m initstudy.train`, which checks the run folders first")


@hydra.main(config_path=str(repo_root()), config_name="params", version_base="1.3")
def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job: train through Hydra's output folder into the run folder. Returns test accuracy (for
    sweepers that optimise)."""
    from initstudy.runner import train_run

    hydra_cfg = HydraConfig.get()
    job_index = hydra_cfg.job.num if hydra_cfg.job.get("num") is not None else 0
    apply_log_level()
    # A job process that did not inherit the profile's environment (SLURM with --export=NONE) gets it here,
    # before its first torch import; one that did (basic launcher, loky, submitit) is checked.
    numerics.apply_before_torch(numerics.from_config(cfg.numerics))

    size = os.environ.get(SWEEP_SIZE_ENV)
    position = f"run {job_index + 1}/{size} " if size else ""
    staging = Path(hydra_cfg.runtime.output_dir)
    metrics = train_run(cfg, final_dir(hydra_cfg), staging, run_identity(cfg), job_index, position)
    return metrics.get("test/acc")


def sweep_id(jobs: Sequence[Job]) -> str:
    """Identity of a sweep: its jobs and their identities. A restarted sweep finds its parent run by it."""
    text = "\n".join(f"{job.run_dir}:{job.identity}" for job in jobs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def mlflow_parent(jobs: Sequence[Job], multirun: bool, overrides: Sequence[str]) -> Iterator[None]:
    """Create (or reuse, for a restarted sweep) the experiment and the sweep's parent run; end it after with
    the sweep's status."""
    root = repo_root()
    cfg = compose_config(list(jobs[0].overrides))
    if cfg.logger.offline:
        yield
        return
    uri = tracking.tracking_uri(cfg.logger, root)
    experiment_id = tracking.ensure_experiment(uri, cfg.logger.experiment_name, root)
    if not multirun:
        yield
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    identity = sweep_id(jobs)
    previous = tracking.retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.`{tracking.SWEEP_ID_TAG}` = '{identity}'",
        max_results=1,
    )
    if previous:
        run = previous[0]
        tracking.retry(client.update_run, run.info.run_id, status="RUNNING")
    else:
        run = tracking.retry(
            client.create_run,
            experiment_id,
            run_name=f"sweep {len(jobs)} runs {identity[:8]}",
            tags={
                tracking.SWEEP_ID_TAG: identity,
                "overrides": tracking.redact(" ".join(overrides)),
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
        tracking.set_status(client, run.info.run_id, status)
        os.environ.pop(tracking.PARENT_RUN_ENV, None)


def quote(value: str) -> str:
    """A path as a quoted Hydra override value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Destinations:
    """Where a launch writes, checked before anything runs."""

    lock_dir: Path
    sweep_root: Path | None  # resolved; None for a single run
    run_dir: Path | None  # resolved; the single run's folder
    hydra_overrides: tuple[str, ...]  # send Hydra's output folders to staging


def check_destinations(jobs: Sequence[Job], multirun: bool) -> Destinations:
    """Every run folder (and the sweep root) new, empty or the project's own; where the lock lives."""
    root = repo_root()
    if multirun:
        sweep_root = rundir.check_sweep_root(jobs[0].sweep_dir, root)
        for job in jobs:
            rundir.check_run_folder(sweep_root / job.run_dir.relative_to(jobs[0].sweep_dir), root)
        staging_root = sweep_root / rundir.STAGING
        overrides = (f"hydra.sweep.dir={quote(str(staging_root))}", *launcher_folders(jobs[0], sweep_root))
        return Destinations(sweep_root, sweep_root, None, overrides)
    run_dir = rundir.check_run_folder(jobs[0].run_dir, root)
    staging = rundir.staging_dir(run_dir)
    return Destinations(rundir.lock_dir_for(run_dir, root), None, run_dir,
                        (f"hydra.run.dir={quote(str(staging))}",))  # fmt: skip


def launcher_folders(job: Job, sweep_root: Path) -> tuple[str, ...]:
    """Launcher folders given relative to ``hydra.sweep.dir`` (submitit's logs, ``.submitit/%j``) stay in the
    sweep root, not in the staging folder that ``hydra.sweep.dir`` now names."""
    launcher = compose_config(list(job.overrides), return_hydra_config=True).hydra.launcher
    raw = OmegaConf.to_container(launcher, resolve=False)
    folder = raw.get("submitit_folder") if isinstance(raw, dict) else None
    if not isinstance(folder, str) or "${hydra.sweep.dir}" not in folder:
        return ()
    return (f"hydra.launcher.submitit_folder={quote(folder.replace('${hydra.sweep.dir}', str(sweep_root)))}",)


def finish_sweep(sweep_root: Path) -> None:
    """Hydra's multirun.yaml next to the manifest; the staging folder gone once empty."""
    staging_root = sweep_root / rundir.STAGING
    written = staging_root / "multirun.yaml"
    if written.is_file():
        os.replace(written, sweep_root / "multirun.yaml")
    rundir.prune_tree(staging_root)


def launch(argv: Sequence[str], overrides: Sequence[str], multirun: bool) -> None:
    """Pre-flight (numerics environment set before torch starts, every job composed and validated,
    destinations and store checked), then Hydra."""
    numerics.apply_for_sweep(overrides, multirun)
    jobs = plan(overrides, multirun)
    destinations = check_destinations(jobs, multirun)
    cfg = compose_config(list(jobs[0].overrides))
    check_accelerator(cfg)
    if not cfg.logger.offline:
        tracking.check_store(tracking.tracking_uri(cfg.logger, repo_root()))
    lock = destinations.lock_dir / rundir.LOCK_NAME
    with locking.exclusive(lock, "training runs"), mlflow_parent(jobs, multirun, overrides):
        if destinations.sweep_root is not None:
            rundir.stamp_sweep_root(destinations.sweep_root)
            write_manifest(jobs, jobs[0].sweep_dir)
            os.environ[SWEEP_SIZE_ENV] = str(len(jobs))
            os.environ[SWEEP_ROOT_ENV] = str(destinations.sweep_root)
            log.info("sweep of %d runs -> %s", len(jobs), jobs[0].sweep_dir)
        else:
            os.environ[RUN_DIR_ENV] = str(destinations.run_dir)
        sys.argv = [sys.argv[0], *argv, *destinations.hydra_overrides]
        try:
            hydra_job()
        finally:
            if destinations.sweep_root is not None:
                finish_sweep(destinations.sweep_root)


def answer_without_running(argv: Sequence[str]) -> None:
    """``--help``, ``--hydra-help``, ``--cfg``, ``--info``, shell completion: Hydra answers them from a primary
    config folder that holds params.yaml alone. Hydra's help lists every config group by walking that folder;
    the repo root holds .venv/, runs/ and data/ (minutes to walk), the config groups live in conf/ (found
    through hydra.searchpath), so the walk covers the configs and nothing else."""
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="initstudy-help-") as folder:
        (Path(folder) / "params.yaml").symlink_to(root / "params.yaml")
        for group in sorted((root / CONFIG_GROUPS_DIR).iterdir()):  # listed as the app's groups
            (Path(folder) / group.name).symlink_to(group)
        sys.argv = [sys.argv[0], *argv]
        hydra.main(config_path=folder, config_name="params", version_base="1.3")(lambda cfg: None)()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        answer_without_running(argv)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        launch(argv, args.overrides, args.multirun)
    except (ConfigError, tracking.TrackingUnavailable, locking.LockHeld) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
