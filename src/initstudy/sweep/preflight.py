"""The training pre-flight: nothing runs before it is known to be valid.

Hydra makes the jobs (its sweeper expands the grid, its config loader composes each job); the project checks
what Hydra produced, through Hydra's extension points:

- A Hydra callback, registered in ``conf/hydra/study.yaml`` (``hydra.callbacks.preflight``), so that it runs
  under any sweeper and launcher: ``on_run_start`` (one run) and ``on_multirun_start`` (a sweep), in the
  launching process, before Hydra writes anything: the numerics environment, the destinations, the MLflow
  store; then the one-writer lock is taken and the sweep's MLflow parent run created (or reused: a restarted
  sweep finds its own by :func:`sweep_id`). ``on_multirun_end`` / ``on_run_end``: the lock released, the
  parent run ended, the staging folder pruned.
- The project's launchers (:class:`ChecksBatches`: hydra_plugins.initstudy_stacked) call :func:`check_batch`
  on each batch the sweeper hands them, as Hydra composed it, before any job of it runs: every job validated,
  no two in one folder, the data verified, every run folder checked, the manifest written.
- ``on_job_start``, in the process that runs the job, on the config Hydra composed for it: the job validated,
  its folder checked and (a tuning sweeper's choice, or a job of a launcher that does not check batches) added
  to the manifest. The verdict is handed to the job itself (:func:`admit`): Hydra turns an exception raised in
  a callback into a warning and runs on, so a refusal has to stop the job from inside.

A refusal in the launching process is one line ``error: ...`` on stderr and exit status 2 (``SystemExit``,
which Hydra's callback runner lets through); :func:`end_session` closes whatever a failed sweep left open.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from initstudy.config import numerics
from initstudy.config.compose import config_hash, is_smoke_test
from initstudy.config.validate import check_accelerator
from initstudy.core import atomic, locking, provenance, signals
from initstudy.core.errors import ConfigError, no_space
from initstudy.core.paths import repo_root
from initstudy.runs import manifest, namespace, rundir
from initstudy.sweep import jobs as sweep_jobs
from initstudy.sweep import search_space
from initstudy.sweep.jobs import Job
from initstudy.sweep.launching import ChecksBatches
from initstudy.tracking import liveness, store

log = logging.getLogger("initstudy.train")

PREFLIGHT_ERRORS = (ConfigError, store.TrackingUnavailable, locking.LockHeld)
OPTUNA_RESULTS = rundir.TUNING_RESULTS
HYDRA_MULTIRUN_FILE = "multirun.yaml"  # Hydra's sweepers save the sweep's config there
ORPHAN_WAIT_S = 10.0  # how long a stopped sweep's workers may take to die before their runs are judged
F = TypeVar("F", bound=Callable[..., Any])

# The launching process's open session (lock, parent run); a module global, not callback state: Hydra pickles
# the callback into every job process.
_session: Session | None = None
# Per job process: run folder -> None (admitted) or the reason it is refused (see admit()).
_verdicts: dict[str, str | None] = {}
# The folder Hydra writes its own files into next (the run's folder, or the sweep's root): named by a full
# disk's one line when Hydra's write fails (Hydra keeps no config once it has failed).
_output_folder: Path | None = None


def output_folder() -> Path | None:
    """Where this launch's Hydra files go (see ``_output_folder``); None before the pre-flight ran."""
    return _output_folder


def refuse(message: str, status: int = 2) -> None:
    """One line on stderr and the exit status: how every refusal of the pre-flight ends."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


class Session(contextlib.ExitStack):
    """What a launch holds open (lock, staging folder, parent run; :meth:`open`), unwound in reverse by
    :func:`end_session`. A sweep's session starts before Hydra's sweeper writes anything, holding nothing yet:
    Hydra then saves ``multirun.yaml`` into the sweep root (making the root) before it hands the launcher a
    batch, and a sweep refused before any job ran (a batch refused by the sweeper's own check or by
    :func:`check_batch`) has changed nothing, so the file goes back and a root Hydra made goes again."""

    def __init__(self, sweep_root: Path | None = None) -> None:
        super().__init__()
        self.opened = False  # the lock is held
        self.launched = False  # a job may have run: the parent run exists, multirun.yaml is the sweep's
        # Whether the sweep writes its root's manifest: the first batch's claim (initstudy.runs.namespace).
        self.owns_manifest = False
        self.sweep_root = sweep_root
        self.root_existed = sweep_root is None or sweep_root.exists()
        self.multirun_yaml = sweep_root / HYDRA_MULTIRUN_FILE if sweep_root is not None else None
        self.multirun_before = (
            self.multirun_yaml.read_bytes() if self.multirun_yaml and self.multirun_yaml.is_file() else None
        )

    def open(self, lock_dir: Path, first: DictConfig, config: DictConfig | None, launch: bool) -> None:
        """Take the one-writer lock, then (a sweep) own the sweep root's staging folder, then (``launch``)
        create the MLflow experiment and, for a sweep, its parent run."""
        self.enter_context(locking.exclusive(lock_dir / rundir.LOCK_NAME, "training runs"))
        if config is not None:
            self.enter_context(sweep_folder(lock_dir))
        self.opened = True
        if launch or config is None:
            self.launch(first, config)

    def launch(self, first: DictConfig, config: DictConfig | None, jobs: Sequence[Job] | None = None) -> None:
        """Jobs are about to run: the sweep's MLflow parent run is created (or reused) now."""
        if not self.launched:
            self.enter_context(mlflow_parent(first, config, jobs))
            self.launched = True

    def undo_hydra_files(self) -> None:
        """Hydra's ``multirun.yaml`` as it was before a sweep that ran nothing; the root, if Hydra made it."""
        if self.multirun_yaml is None or self.sweep_root is None or self.launched:
            return
        if self.multirun_before is None:
            self.multirun_yaml.unlink(missing_ok=True)
        else:
            atomic.write_bytes(self.multirun_yaml, self.multirun_before)
        if not self.root_existed and self.sweep_root.is_dir() and not any(self.sweep_root.iterdir()):
            self.sweep_root.rmdir()


def refusing(hook: F) -> F:
    """A launching-process hook whose failures stop the launch (Hydra would log them and run on)."""

    @functools.wraps(hook)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return hook(*args, **kwargs)
        except PREFLIGHT_ERRORS as error:
            end_session(error)
            refuse(str(error))
        except Exception as error:
            end_session(RuntimeError("pre-flight failed"))
            if full := no_space(error):
                refuse(full, status=1)
            traceback.print_exc()
            refuse("the pre-flight failed unexpectedly (traceback above); nothing was run", status=1)

    return guarded  # type: ignore[return-value]


def final_path(path: Path | str) -> str:
    """A run folder as the key the pre-flight and the job agree on (symlinks resolved)."""
    return os.path.realpath(path)


class Preflight(Callback):
    """Hydra callback: the pre-flight, the lock, the manifest and the MLflow parent run of a launch."""

    def __init__(self) -> None:
        # One run: its final run folder -> identity. None for a sweep: each job is checked as it starts.
        self.planned: dict[str, str] | None = None
        # A sweep under a launcher that does not check batches: each job claims its folder as it starts, and
        # adds itself to the manifest if the sweep owns it (a launcher that checks batches does both).
        self.checks_jobs = self.adds_to_manifest = False

    # ---- one run ----

    @refusing
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(sweep_jobs.SWEPT_KEYS_ENV, None)  # a single run sweeps nothing
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        job = sweep_jobs.make_job(config, sweep_jobs.as_given(config.hydra.overrides.task), multirun=False)
        sweep_jobs.check_data_files([config])
        root = repo_root()
        run_dir = rundir.check_run_folder(job.run_dir, root)
        global _output_folder
        _output_folder = run_dir
        claim = claim_namespace(config, [job], sweep_root=None)
        check_services(config)
        open_session(rundir.lock_dir_for(run_dir, root), config, config=None)
        claim.clear_leftovers()
        self.planned = {final_path(run_dir): job.identity}

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        job_return = kwargs.get("job_return")
        failed = job_return is not None and getattr(job_return.status, "name", "") == "FAILED"
        end_session(RuntimeError("the run failed") if failed else None)

    # ---- a sweep ----

    @refusing
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The keys this sweep varies name the jobs' folders (sweep.group_name); the jobs inherit them.
        arguments = sweep_jobs.sweeper_arguments(config.hydra) + sweep_jobs.as_given(
            config.hydra.overrides.task
        )
        os.environ[sweep_jobs.SWEPT_KEYS_ENV] = ",".join(sweep_jobs.swept_keys(arguments))
        batches_checked, grid = launcher_checks_batches(config), sweep_jobs.is_grid(config.hydra)
        if not batches_checked or not grid:
            # The jobs are checked one by one as they start: the config they share is checked now.
            self.check_base(config, tuning=not grid)
        root = repo_root()
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_root = rundir.check_sweep_root(sweep_dir, root)
        global _output_folder
        _output_folder = sweep_dir
        # A tuning sweep's root is its own (initstudy.runs.namespace); a grid's jobs are claimed as a batch
        # (check_batch) or, under a launcher that does not check batches, each as it starts.
        self.checks_jobs = not batches_checked and grid
        self.adds_to_manifest = False
        start_sweep(sweep_root)
        if batches_checked and grid:  # nothing is written before the first batch is checked (check_batch)
            # The launcher's code may import torch before the batch is checked: the environment first. The
            # batch then checks that every job shares it (numerics.apply_shared).
            numerics.apply_before_torch(numerics.from_config(config.numerics))
            log.info("sweep by %s -> %s", config.hydra.sweeper.get("_target_"), sweep_dir)
            return
        claim = None if grid else claim_namespace(config, None, sweep_root=sweep_root)
        check_services(config)
        open_session(sweep_root, config, config=config, launch=not batches_checked)
        if claim is not None:
            claim.clear_leftovers()
        rundir.stamp_sweep_root(sweep_root)
        if not batches_checked:
            self.adds_to_manifest = not is_smoke_test(config) and (
                claim.owns_manifest if claim is not None else manifest_owned(config, sweep_root)
            )
            if self.adds_to_manifest:
                manifest.write_manifest([], sweep_dir)  # each job adds itself as it starts
        log.info("sweep by %s -> %s", config.hydra.sweeper.get("_target_"), config.hydra.sweep.dir)

    def check_base(self, config: DictConfig, tuning: bool) -> DictConfig:
        """The jobs are not known yet (a tuning sweeper picks them as it goes; a launcher that does not check
        batches shows them to no one before they start): the config they start from is checked now
        (numerics environment, values, data files), each job again when it starts."""
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        sweep_jobs.validate_job(config)
        search_space.check(config.hydra)
        if tuning and not config.data.val_size:
            raise ConfigError(
                f"invalid data.val_size={config.data.val_size} for a tuning sweep: the tuner would maximise the "
                "test accuracy (tuning on the test set); hold out a validation split, e.g. data.val_size=10000"
            )
        sweep_jobs.check_data_files([config])
        return config

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        end_session(None)

    # ---- each job, in the process that runs it ----

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        final = final_path(config.hydra.runtime.output_dir)
        sweep_jobs.staging_for(config.hydra).mkdir(parents=True, exist_ok=True)  # where the job log goes
        # Hydra made its output folder (the run folder) before this hook; a run folder appears only once
        # its run is complete (promoted from staging), so an empty one goes again.
        rundir.prune_empty(Path(final), prune_stop(config, final))
        try:
            if self.planned is not None:
                check_planned(config, final, self.planned)
            else:
                self.admit_job(config, final)
            _verdicts[final] = None
        except Exception as error:  # Hydra would only warn: the job itself refuses (admit)
            known = isinstance(error, PREFLIGHT_ERRORS)
            _verdicts[final] = (
                str(error) if known else f"its pre-flight failed: {type(error).__name__}: {error}"
            )
            discard_attempt(config, final)

    def admit_job(self, config: DictConfig, final: str) -> None:
        """A job of a sweep, as Hydra composed it for this process: validated, its folder checked, and added to
        the manifest unless its batch put it there (a tuning sweeper's choice, or a launcher that does not
        check batches: :class:`ChecksBatches`). The data files' hashes are read once per process."""
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        job = sweep_jobs.make_job(config, sweep_jobs.as_given(config.hydra.overrides.task), multirun=True)
        sweep_jobs.check_data_files([config])
        rundir.check_run_folder(Path(final), repo_root())
        if self.checks_jobs:  # no batch check claimed its folder
            namespace.check_replacement(Path(final), job, launch_of(config), repo_root(), multirun=True)
        if self.adds_to_manifest:
            manifest.append_to_manifest(job, Path(config.hydra.sweep.dir))


def launch_of(config: DictConfig) -> namespace.Launch:
    """The launch as the namespace rules read it, for a sweep's config (its layout: ``hydra.sweep``)."""
    return namespace.Launch.of(config, sweep_jobs.layout_keys(config.hydra, config.hydra.sweep))


def manifest_owned(config: DictConfig, sweep_root: Path) -> bool:
    """Whether a sweep whose jobs are not known up front may rewrite its root's manifest: the root's plan, or a
    root without one (initstudy.runs.namespace.owns_manifest)."""
    return namespace.owns_manifest(sweep_root, set(), launch_of(config), repo_root())


def claim_namespace(
    config: DictConfig, jobs: Sequence[Job] | None, sweep_root: Path | None
) -> namespace.Claim:
    """The study's namespace (initstudy.runs.namespace): each job's folder may take its run, its staging folder
    holds nothing foreign, and whether a sweep owns its root's manifest; before the lock or MLflow is touched."""
    layout = config.hydra.sweep if sweep_root is not None else config.hydra.run
    launch = namespace.Launch.of(config, sweep_jobs.layout_keys(config.hydra, layout))
    return namespace.claim(config, launch, jobs, repo_root(), sweep_root)


def check_planned(config: DictConfig, final: str, planned: dict[str, str]) -> None:
    """The job Hydra started is one the pre-flight validated: same run folder, same identity."""
    identity = rundir.run_identity(sweep_jobs.task_config(config))
    if planned.get(final) != identity:
        overrides = " ".join(sweep_jobs.as_given(config.hydra.overrides.task))
        raise ConfigError(
            f"job {overrides!r} ({final}) is not one the pre-flight validated; its sweeper or launcher changed "
            "the jobs after the pre-flight"
        )


def prune_stop(config: DictConfig, final: str) -> Path:
    """Up to where empty folders of a job may be removed: its sweep root, or a single run's parent."""
    if config.hydra.mode == RunMode.MULTIRUN:
        return Path(os.path.realpath(config.hydra.sweep.dir))
    return Path(final).parent


def discard_attempt(config: DictConfig, final: str) -> None:
    """Hydra's files of a refused job (in its staging folder) go again."""
    staging = sweep_jobs.staging_for(config.hydra)
    if rundir.remove_owned(staging):
        rundir.prune_empty(staging.parent, prune_stop(config, final))


def admit(final: Path | str) -> None:
    """Called by the job before it trains: raise the refusal ``on_job_start`` recorded, or refuse a job no
    pre-flight has seen (Hydra started without the callback, e.g. ``hydra.callbacks`` overridden)."""
    key = final_path(final)
    if key not in _verdicts:
        raise RuntimeError(
            "start training with `python -m initstudy.train` and keep hydra.callbacks.preflight: it checks the "
            "run folders first"
        )
    reason = _verdicts[key]
    if reason is not None:
        raise ConfigError(reason)


# ---- shared steps ----------------------------------------------------------------------------------------


def launcher_checks_batches(config: DictConfig) -> bool:
    """Whether the sweep's launcher is a :class:`ChecksBatches` (its class imported from its ``_target_``)."""
    target = config.hydra.launcher.get("_target_")
    return bool(target) and issubclass(get_class(str(target)), ChecksBatches)


@refusing
def check_batch(
    config: DictConfig, configs: Sequence[DictConfig], job_overrides: Sequence[Sequence[str]], first: bool
) -> None:
    """:func:`check_jobs` on a batch of the sweep whose config is ``config``; then, before the first job runs,
    the sweep's MLflow parent run. A refusal ends the session (:func:`refusing`), which puts back the
    ``multirun.yaml`` Hydra's sweeper replaced."""
    jobs = check_jobs(config, configs, job_overrides)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_root = Path(final_path(sweep_dir))
    claim = claim_namespace(config, jobs, sweep_root=sweep_root)
    if _session is None or not _session.opened:
        check_store(configs[0])
        open_session(sweep_root, configs[0], config=config, launch=False)
        rundir.stamp_sweep_root(sweep_root)
    assert _session is not None
    claim.clear_leftovers()
    if first:
        # A smoke test (fast_dev_run) completes no run: the manifest (what a report reads) is left alone.
        _session.owns_manifest = claim.owns_manifest and not all(is_smoke_test(cfg) for cfg in configs)
    if _session.owns_manifest:
        if first:
            manifest.write_manifest(jobs, sweep_dir)
        else:
            for job in jobs:
                manifest.append_to_manifest(job, sweep_dir)
    _session.launch(configs[0], config, jobs if sweep_jobs.is_grid(config.hydra) else None)


def check_jobs(
    config: DictConfig, configs: Sequence[DictConfig], job_overrides: Sequence[Sequence[str]]
) -> list[Job]:
    """The jobs Hydra's sweeper handed the launcher, as Hydra composed them (``load_sweep_config``: every
    interpolation, ``hydra.sweep.subdir`` included, resolved in each job's own config), checked before any
    runs: the numerics environment they share set (before torch starts), each job validated, no two in one
    folder, the data files verified, every destination checked, the accelerator present; then the manifest
    written (the first batch) or extended (a tuning sweeper's later batches)."""
    numerics.apply_shared([numerics.from_config(cfg.numerics) for cfg in configs])
    jobs = [sweep_jobs.make_job(cfg, list(overrides), multirun=True)
            for cfg, overrides in zip(configs, job_overrides, strict=True)]  # fmt: skip
    sweep_jobs.check_distinct(jobs)
    sweep_jobs.check_data_files(configs)
    check_accelerator(configs[0])
    sweep_dir = Path(configs[0].hydra.sweep.dir)
    root = repo_root()
    sweep_root = Path(final_path(sweep_dir))
    for job in jobs:
        rundir.check_run_folder(sweep_root / job.run_dir.relative_to(sweep_dir), root)
    log.info("%d runs checked -> %s", len(jobs), sweep_dir)  # one batch of the sweep
    return jobs


def check_store(cfg: DictConfig) -> None:
    """The MLflow store answers (unless offline)."""
    if not cfg.logger.offline:
        store.check_store(store.tracking_uri(cfg.logger, repo_root()))


def check_services(cfg: DictConfig) -> None:
    """A GPU asked for exists; the MLflow store answers (unless offline)."""
    check_accelerator(cfg)
    check_store(cfg)


def sweep_id(config: DictConfig, jobs: Sequence[Job] | None = None) -> str:
    """Identity of a sweep: a grid's jobs and their identities where the batch check knows them; else its
    root, overrides, sweeper settings and the config they start from (an edit of params.yaml is another
    sweep). A restarted sweep finds its parent run by it."""
    if jobs is not None:
        text = "\n".join(f"{job.run_dir}:{job.identity}" for job in jobs)
    else:
        sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
        text = yaml.safe_dump({"dir": str(config.hydra.sweep.dir), "sweeper": sweeper,
                               "overrides": sorted(sweep_jobs.as_given(config.hydra.overrides.task)),
                               "config": config_hash(sweep_jobs.task_config(config))}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_session(lock_dir: Path, first: DictConfig, config: DictConfig | None, launch: bool = True) -> None:
    """:meth:`Session.open` on this launch's session (a sweep's, made when it started, or a new one); all
    stays open until :func:`end_session`, which unwinds it in reverse. The parent run of a sweep whose batches
    are checked is created once the first batch is admitted (:func:`check_batch`)."""
    global _session
    if _session is not None and _session.opened:  # left open by an earlier launch in this process
        _session.close()
        _session = None
    session = _session if _session is not None else Session(lock_dir if config is not None else None)
    try:
        session.open(lock_dir, first, config, launch)
    except BaseException:
        session.close()
        _session = None
        raise
    _session = session


def start_sweep(sweep_root: Path) -> None:
    """A sweep's session, holding nothing yet: what Hydra's sweeper is about to write can be undone."""
    global _session
    if _session is not None:  # left open by an earlier launch in this process
        _session.close()
    _session = Session(sweep_root)


def end_session(error: BaseException | None) -> None:
    """Close the open session: the parent run FINISHED, or FAILED / KILLED after ``error``; lock released."""
    global _session
    stack, _session = _session, None
    os.environ.pop(sweep_jobs.SWEPT_KEYS_ENV, None)
    if stack is None:
        return
    if error is not None:
        stack.undo_hydra_files()
    if error is None:
        stack.close()
    else:
        stack.__exit__(type(error), error, error.__traceback__)


@contextlib.contextmanager
def sweep_folder(sweep_root: Path) -> Iterator[None]:
    """On the way out: the staging folder pruned (empty once every attempt is promoted); the tuning result the
    Optuna sweeper leaves in the sweep root stays there (a sweep-root file of the contract), and is logged
    (and tagged on the parent run)."""
    try:
        yield
    finally:
        rundir.prune_tree(sweep_root / rundir.STAGING)
        results = sweep_root / OPTUNA_RESULTS
        if results.is_file():  # kept beside the manifest (rundir.SWEEP_OWNED_FILES)
            log.info("tuning result (%s): %s", results, " ".join(results.read_text().split()))


@contextlib.contextmanager
def mlflow_parent(
    cfg: DictConfig, config: DictConfig | None, jobs: Sequence[Job] | None = None
) -> Iterator[None]:
    """Create the store's experiment and, for a sweep (``config`` given), create (or reuse, for a restarted
    sweep) its parent run; end it after with the sweep's status."""
    if cfg.logger.offline:
        yield
        return
    root = repo_root()
    uri = store.tracking_uri(cfg.logger, root)
    experiment_id = store.ensure_experiment(uri, cfg.logger.experiment_name, root)
    if config is None:
        yield
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = parent_run_id(client, experiment_id, config, jobs)
    os.environ[store.PARENT_RUN_ENV] = run_id
    heartbeat = store.heartbeat(client, run_id)
    started_ms = int(time.time() * 1000)
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
        tag_tuning_result(client, run_id, Path(config.hydra.sweep.dir))
    except (signals.Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        heartbeat.stop()
        if status != "FINISHED":  # children whose worker died with the sweep (joblib, stacked workers)
            store.end_orphaned_runs(client, experiment_id, parent=run_id, wait_s=ORPHAN_WAIT_S)
        if status == "FAILED" and store.only_stopped(client, experiment_id, run_id, since_ms=started_ms):
            status = "KILLED"  # stop signals to the jobs' own processes (workers) ended it, not a failing run
        store.set_status(client, run_id, status)
        os.environ.pop(store.PARENT_RUN_ENV, None)


def parent_run_id(client: Any, experiment_id: str, config: DictConfig, jobs: Sequence[Job] | None) -> str:
    """The parent run of this sweep: the one a restarted sweep made before (by :func:`sweep_id`), or new."""
    identity = sweep_id(config, jobs)
    previous = store.retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.`{store.SWEEP_ID_TAG}` = '{identity}'",
        max_results=1,
    )
    if previous:
        run_id = previous[0].info.run_id
        store.retry(client.update_run, run_id, status="RUNNING")
        store.claim(client, run_id)
        return run_id
    overrides = " ".join(sweep_jobs.as_given(config.hydra.overrides.task))
    label = (
        f"{len(jobs)} runs" if jobs is not None else "grid" if sweep_jobs.is_grid(config.hydra) else "tuning"
    )
    run = store.retry(
        client.create_run,
        experiment_id,
        run_name=f"sweep {label} {identity[:8]}",
        tags={
            store.SWEEP_ID_TAG: identity,
            "overrides": store.redact(overrides),
            **provenance.git_state(repo_root()),
            **liveness.owner_tags(),
        },
    )
    return run.info.run_id


def tag_tuning_result(client: Any, run_id: str, sweep_root: Path) -> None:
    """A tuning sweeper's best trial (Optuna's results file) as tags of the parent run."""
    path = sweep_root / OPTUNA_RESULTS
    if not path.is_file():
        return
    results = yaml.safe_load(path.read_text()) or {}
    tags = {f"best.{key}": str(value) for key, value in (results.get("best_params") or {}).items()}
    if results.get("best_value") is not None:
        tags["best_value"] = str(results["best_value"])
    for key, value in tags.items():
        store.retry(client.set_tag, run_id, key, value)
