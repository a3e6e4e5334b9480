"""The training pre-flight as a Hydra callback: nothing runs before every job is known to be valid.

Registered in ``conf/hydra/study.yaml`` (``hydra.callbacks.preflight``), so it runs under any sweeper and
launcher Hydra is given:

- ``on_run_start`` (one run) and ``on_multirun_start`` (a sweep), in the launching process, before Hydra
  writes anything: the numerics environment is set (before torch starts), every job of a grid is composed
  once and validated, the data files verified, every destination checked, the MLflow store checked; then the
  one-writer lock is taken, the manifest written and the sweep's MLflow parent run created (or reused: a
  restarted sweep finds its own by :func:`sweep_id`).
- ``on_job_start``, in the process that runs the job: a job of a grid must be the one planned (same run
  folder, same identity); a job a tuning sweeper (Optuna) chose as it went is validated now, its folder
  checked and added to the manifest. The verdict is handed to the job itself (:func:`admit`): Hydra turns
  an exception raised in a callback into a warning and runs on, so a refusal has to stop the job from inside.
- ``on_multirun_end`` / ``on_run_end``: the lock released, the parent run ended, the staging folder pruned.

A refusal in the launching process is one line ``error: ...`` on stderr and exit status 2 (``SystemExit``,
which Hydra's callback runner lets through); :func:`end_session` closes whatever a failed sweep left open.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hydra import compose
from hydra.core.config_loader import ConfigLoader
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from initstudy.config import numerics
from initstudy.config.compose import PRIMARY_CONFIG, one_line
from initstudy.config.validate import check_accelerator
from initstudy.core import locking, provenance, signals
from initstudy.core.errors import ConfigError, no_space
from initstudy.core.paths import repo_root
from initstudy.runs import manifest, namespace, rundir
from initstudy.sweep import jobs as sweep_jobs
from initstudy.sweep import search_space
from initstudy.sweep.jobs import Job
from initstudy.tracking import liveness, store

log = logging.getLogger("initstudy.train")

SWEEP_SIZE_ENV = "INITSTUDY_SWEEP_SIZE"
PREFLIGHT_ERRORS = (ConfigError, store.TrackingUnavailable, locking.LockHeld)
OPTUNA_RESULTS = rundir.TUNING_RESULTS
ORPHAN_WAIT_S = 10.0  # how long a stopped sweep's workers may take to die before their runs are judged
F = TypeVar("F", bound=Callable[..., Any])

# Every job of a grid as the pre-flight composed it, by the job's overrides: what Hydra's load_sweep_config
# returns for them (the same loader, overrides and run mode; see PlannedConfigLoader). Kept for the launch.
_composed: dict[tuple[str, ...], DictConfig] = {}

# The launching process's open session (lock, parent run); a module global, not callback state: Hydra pickles
# the callback into every job process.
_session: contextlib.ExitStack | None = None
# Per job process: run folder -> None (admitted) or the reason it is refused (see admit()).
_verdicts: dict[str, str | None] = {}


def refuse(message: str, status: int = 2) -> None:
    """One line on stderr and the exit status: how every refusal of the pre-flight ends."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


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
        # final run folder -> identity, for the jobs known up front; None while a tuning sweeper picks them.
        self.planned: dict[str, str] | None = None

    # ---- one run ----

    @refusing
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(sweep_jobs.SWEPT_KEYS_ENV, None)  # a single run sweeps nothing
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        job = sweep_jobs.make_job(config, sweep_jobs.as_given(config.hydra.overrides.task), multirun=False)
        sweep_jobs.check_data_files([config])
        root = repo_root()
        run_dir = rundir.check_run_folder(job.run_dir, root)
        claim = claim_namespace(config, [job], sweep_root=None)
        check_services(config)
        open_session(rundir.lock_dir_for(run_dir, root), config, config=None, jobs=None)
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
        if sweep_jobs.is_grid(config.hydra):
            jobs, first = self.plan_grid(config, arguments)
        else:
            jobs, first = None, self.check_base(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        root = repo_root()
        sweep_root = rundir.check_sweep_root(sweep_dir, root)
        for job in jobs or ():
            rundir.check_run_folder(sweep_root / job.run_dir.relative_to(sweep_dir), root)
        claim = claim_namespace(config, jobs, sweep_root=sweep_root)
        check_services(first)
        open_session(sweep_root, first, config=config, jobs=jobs)
        claim.clear_leftovers()
        rundir.stamp_sweep_root(sweep_root)
        if claim.owns_manifest:
            manifest.write_manifest(jobs or [], sweep_dir)
        if jobs is not None:
            os.environ[SWEEP_SIZE_ENV] = str(len(jobs))
            self.planned = {final_path(sweep_root / job.run_dir.relative_to(sweep_dir)): job.identity
                            for job in jobs}  # fmt: skip
            log.info("sweep of %d runs -> %s", len(jobs), sweep_dir)
        else:
            log.info("sweep chosen by %s -> %s", config.hydra.sweeper.get("_target_"), sweep_dir)

    def plan_grid(self, config: DictConfig, arguments: Sequence[str]) -> tuple[list[Job], DictConfig]:
        """Every job of a grid composed once (Hydra's own overrides included, as Hydra will compose it),
        the numerics environment set from them, then each validated; the data checked once."""
        lists = sweep_jobs.grid(arguments)
        hydra_overrides = sweep_jobs.as_given(config.hydra.overrides.hydra)
        configs = [compose_job(hydra_overrides + job) for job in lists]
        numerics.apply_shared([numerics.from_config(cfg.numerics) for cfg in configs])
        jobs = [sweep_jobs.make_job(cfg, job, multirun=True) for cfg, job in zip(configs, lists, strict=True)]
        sweep_jobs.check_distinct(jobs)
        sweep_jobs.check_data_files(configs)
        _composed.clear()
        _composed.update({tuple(job): cfg for job, cfg in zip(lists, configs, strict=True)})
        return jobs, configs[0]

    def check_base(self, config: DictConfig) -> DictConfig:
        """A tuning sweep: the jobs are not known yet. The config they start from is checked now (numerics
        environment, values, data files), each job again when it starts."""
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        sweep_jobs.validate_job(config)
        search_space.check(config.hydra)
        if not config.data.val_size:
            raise ConfigError(
                f"invalid data.val_size={config.data.val_size} for a tuning sweep: the tuner would maximise the "
                "test accuracy (tuning on the test set); hold out a validation split, e.g. data.val_size=10000"
            )
        sweep_jobs.check_data_files([config])
        return config

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _composed.clear()
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
                self.admit_chosen(config, final)
            _verdicts[final] = None
        except Exception as error:  # Hydra would only warn: the job itself refuses (admit)
            known = isinstance(error, PREFLIGHT_ERRORS)
            _verdicts[final] = (
                str(error) if known else f"its pre-flight failed: {type(error).__name__}: {error}"
            )
            discard_attempt(config, final)

    def admit_chosen(self, config: DictConfig, final: str) -> None:
        """A job a tuning sweeper chose: validated, its folder checked, added to the manifest."""
        numerics.apply_before_torch(numerics.from_config(config.numerics))
        job = sweep_jobs.make_job(config, sweep_jobs.as_given(config.hydra.overrides.task), multirun=True)
        sweep_jobs.check_data_files([config])
        rundir.check_run_folder(Path(final), repo_root())
        manifest.append_to_manifest(job, Path(config.hydra.sweep.dir))


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


def compose_job(overrides: Sequence[str]) -> DictConfig:
    """One job's config as Hydra will compose it: Hydra's compose API inside the running app, so with the
    app's own config loader and search path; a composition error is a one-line ConfigError."""
    try:
        return compose(PRIMARY_CONFIG, overrides=list(overrides), return_hydra_config=True)
    except HydraException as error:
        raise ConfigError(one_line(error, repo_root())) from None


class PlannedConfigLoader(ConfigLoader):
    """Hydra's config loader, except that a job the pre-flight has composed is not composed again.

    Hydra composes each job of a sweep twice after the pre-flight did: the sweeper checks the batch
    (``validate_batch_is_legal``: "this repeats work the launcher will do") and the launcher composes it to run
    it, ~0.3 s each here; for the 525 jobs of the depth experiment that was 5 of its 22 minutes.
    ``load_sweep_config`` composes ``hydra.overrides.hydra`` + the job's overrides in RUN mode, which is what
    :func:`compose_job` did with the same loader (Hydra's compose API differs only in the wording of its
    errors), so a copy of the pre-flight's config is the config Hydra would build. Any other job (a tuning
    sweeper's, one the pre-flight did not plan) and every other method go to Hydra's loader. Installed by
    the stacked launcher (hydra_plugins.initstudy_stacked), on the context its sweeper shares."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.reused = self.composed = 0  # job configs copied from the pre-flight's, and composed by Hydra

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        planned = _composed.get(tuple(sweep_overrides))
        if planned is None:
            self.composed += 1
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        self.reused += 1
        config = copy.deepcopy(planned)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as Hydra's loader does
        return config

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


def check_services(cfg: DictConfig) -> None:
    """A GPU asked for exists; the MLflow store answers (unless offline)."""
    check_accelerator(cfg)
    if not cfg.logger.offline:
        store.check_store(store.tracking_uri(cfg.logger, repo_root()))


def sweep_id(jobs: Sequence[Job] | None, config: DictConfig | None = None) -> str:
    """Identity of a sweep: its jobs and their identities, or for a tuning sweep its root, overrides and
    sweeper settings. A restarted sweep finds its parent run by it."""
    if jobs is not None:
        text = "\n".join(f"{job.run_dir}:{job.identity}" for job in jobs)
    else:
        assert config is not None
        sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
        text = yaml.safe_dump({"dir": str(config.hydra.sweep.dir), "sweeper": sweeper,
                               "overrides": sorted(sweep_jobs.as_given(config.hydra.overrides.task))}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_session(
    lock_dir: Path, first: DictConfig, config: DictConfig | None, jobs: Sequence[Job] | None
) -> None:
    """Take the one-writer lock, then (a sweep) own the sweep root's staging folder, then create the MLflow
    experiment and, for a sweep, its parent run: all stay open until :func:`end_session`, which unwinds
    them in reverse."""
    global _session
    if _session is not None:  # left open by an earlier launch in this process
        _session.close()
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(locking.exclusive(lock_dir / rundir.LOCK_NAME, "training runs"))
        if config is not None:
            stack.enter_context(sweep_folder(lock_dir))
        stack.enter_context(mlflow_parent(first, config, jobs))
    except BaseException:
        stack.close()
        raise
    _session = stack


def end_session(error: BaseException | None) -> None:
    """Close the open session: the parent run FINISHED, or FAILED / KILLED after ``error``; lock released."""
    global _session
    stack, _session = _session, None
    os.environ.pop(sweep_jobs.SWEPT_KEYS_ENV, None)
    os.environ.pop(SWEEP_SIZE_ENV, None)
    if stack is None:
        return
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
def mlflow_parent(cfg: DictConfig, config: DictConfig | None, jobs: Sequence[Job] | None) -> Iterator[None]:
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
        store.set_status(client, run_id, status)
        os.environ.pop(store.PARENT_RUN_ENV, None)


def parent_run_id(client: Any, experiment_id: str, config: DictConfig, jobs: Sequence[Job] | None) -> str:
    """The parent run of this sweep: the one a restarted sweep made before (by :func:`sweep_id`), or new."""
    identity = sweep_id(jobs, config)
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
    label = f"{len(jobs)} runs" if jobs is not None else "tuning"
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
