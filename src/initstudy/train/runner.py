"""A run's steps around the fit, as a few functions that read like a pipeline (initstudy.train.fit calls them).

resume (a complete run with the same identity returns at once) -> begin an attempt in the staging folder ->
set up the process; DataModule, model and Trainer from their config groups (``hydra.utils.instantiate``;
the fit itself: initstudy.train.fit) -> write the results -> marker -> promote the staging folder into place
-> mark the MLflow run FINISHED. The run-folder rules
(ownership, staging, completeness) live in :mod:`initstudy.runs.rundir`; MLflow logging in :mod:`initstudy.tracking`.
"""

from __future__ import annotations

import gc
import io
import logging
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from initstudy.config import numerics
from initstudy.config.compose import is_smoke_test
from initstudy.core import atomic, collector, provenance, signals
from initstudy.core import provenance as core_provenance
from initstudy.core.faults import pause_point
from initstudy.core.paths import repo_root
from initstudy.data.datamodule import MNISTDataModule
from initstudy.nn import weights
from initstudy.nn.model import MLP
from initstudy.runs import rundir
from initstudy.tracking import store
from initstudy.train.convergence import THRESHOLDS, first_crossing, threshold_key
from initstudy.train.members import Member
from initstudy.train.recorder import RunRecorder
from initstudy.train.records import Evaluation

log = logging.getLogger(__name__)


def run_label(cfg: DictConfig) -> str:
    return f"{cfg.init.name}/seed_{cfg.seed}"


def quiet_lightning() -> None:
    """Lightning's start-up banner (accelerator lines, tips) says nothing a run's log does not already say."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def thresholds_reached(history: pd.DataFrame, split: str) -> dict[str, float | None]:
    """Optimizer steps to each threshold of ``<split>/acc_step``, interpolated (initstudy.train.convergence); None
    for a threshold never reached (censored at ``steps_completed``)."""
    series = history[history.metric == f"{split}/acc_step"].sort_values("step", kind="stable")
    steps, values = series.step.tolist(), series.value.tolist()
    return {
        f"steps_to_{threshold_key(threshold)}": first_crossing(steps, values, threshold)
        for threshold in THRESHOLDS
    }


def evaluation_minimum(history: pd.DataFrame, split: str) -> dict[str, float | int | None]:
    """The lowest ``<split>/loss_step`` and its step: where a validation-driven choice would stop."""
    series = history[history.metric == f"{split}/loss_step"].dropna(subset=["value"])
    if series.empty:
        return {f"{split}/loss_min": None, f"{split}/loss_min_step": None}
    best = series.loc[series.value.idxmin()]
    return {f"{split}/loss_min": float(best.value), f"{split}/loss_min_step": int(best.step)}


def symmetry_diagnostics(model: MLP, test: Evaluation, labels: torch.Tensor) -> dict[str, Any]:
    """Evidence for statements about symmetry: distinct weight rows per hidden layer after training, and
    how many distinct classes the network predicted in the test pass (1 = a constant prediction, whose
    accuracy is then the share of that class in the test set)."""
    hidden = model.linear_layers()[:-1]
    counts = torch.bincount(labels, minlength=10)
    return {
        "distinct_hidden_units": [int(torch.unique(layer.weight, dim=0).shape[0]) for layer in hidden],
        "hidden_units": [int(layer.out_features) for layer in hidden],
        "test/distinct_predictions": sum(1 for n in test.predicted_per_class if n),
        "test/majority_class": int(counts.argmax()),
        "test/majority_class_share": float(counts.max() / counts.sum()),
    }


def build_datamodule(cfg: DictConfig, device: str, **extra: Any) -> MNISTDataModule:
    """conf/data's DataModule, its tensors loaded onto ``device``: the module needs steps_per_epoch and LSUV
    a training batch before the Trainer exists. ``extra``: more keyword arguments for ``instantiate`` (the
    members' seeds)."""
    datamodule = instantiate(
        cfg.data, root=str(repo_root() / cfg.data.root), seed=cfg.seed, device=device, **extra
    )
    datamodule.setup()
    return datamodule


class CollectorResumed(pl.Callback):
    """Training starts: the cycle collector, paused through start-up, resumes (initstudy.core.collector)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        collector.training_started()
        pause_point("fitting")  # inside the fit, Lightning's signal handlers in place (tests stop runs here)


def chosen_callbacks(cfg: DictConfig, staging: Path) -> list[pl.Callback]:
    """conf/callbacks' entries (``+callbacks=...``), instantiated; a ModelCheckpoint writes into the attempt's
    staging folder (``checkpoints/``), which is promoted with the run (initstudy.runs.rundir.CHECKPOINTS)."""
    made = []
    for node in (cfg.get("callbacks") or {}).values():
        if issubclass(get_class(node._target_), ModelCheckpoint):
            made.append(instantiate(node, dirpath=str(staging / rundir.CHECKPOINTS)))
        else:
            made.append(instantiate(node))
    return made


def build_trainer(
    cfg: DictConfig, job_index: int, logger: Any, callbacks: list[pl.Callback], staging: Path
) -> pl.Trainer:
    """conf/trainer's Trainer, completed with what depends on the job and what this study fixes. Gradient
    clipping is the module's (manual optimization: Lightning would refuse it; initstudy.train.module)."""
    accelerator, devices = resolve_device(cfg.trainer.accelerator, job_index)
    callbacks = [*callbacks, *chosen_callbacks(cfg, staging)]
    return instantiate(
        cfg.trainer,
        _convert_="all",  # callbacks and devices as plain lists, as Lightning expects
        accelerator=accelerator,
        devices=devices,
        deterministic=cfg.numerics.deterministic,
        logger=logger or False,
        callbacks=[*callbacks, CollectorResumed()],
        gradient_clip_val=None,
        gradient_clip_algorithm=None,
        # Lightning's default checkpoint only where a run asks for one (+callbacks=checkpoint).
        enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
        # A live bar (epoch, chunk of steps) only on a terminal; CI, DVC and SLURM logs get the recorder's
        # one line per epoch instead.
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=-1,  # the whole evaluation split before training: the evaluation at init
        default_root_dir=str(staging),
    )


@contextmanager
def lightning_hints_silenced() -> Iterator[None]:
    """Lightning's hints that do not apply to this design, silenced for the Trainer's lifetime only."""
    with warnings.catch_warnings():
        # It suggests DataLoader workers; our batches are slices of device-resident tensors.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # It compares log_every_n_steps with its batches, which are chunks of steps_per_chunk optimizer steps;
        # the interval counts optimizer steps, see initstudy.train.recorder.
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for us to change.
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        yield


def resolve_device(accelerator: str, job_index: int) -> tuple[str, list[int] | int]:
    """(accelerator, devices) for this job: one GPU per job, round-robin over the GPUs by job index, so
    that parallel jobs (joblib) on a multi-GPU machine each get their own; the CPU otherwise."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "gpu", [job_index % torch.cuda.device_count()]
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"trainer.accelerator={accelerator} but torch sees no CUDA device")
    return "cpu", 1


class DeferredFinishMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, except that the fit does not end the run: a run is FINISHED only once its run
    folder is complete (results and marker written, folder promoted), and FAILED or KILLED by the attempt that
    knows why it ended (:class:`Tracking`; Lightning would call a stopped fit FAILED)."""

    def finalize(self, status: str = "success") -> None:
        pass


@dataclass
class Tracking:
    """The MLflow child run of one attempt (or nothing, offline)."""

    logger: Any = None
    client: Any = None
    run_id: str | None = None
    heartbeat: Any = None  # the owner's heartbeat while the run is RUNNING (initstudy.tracking.liveness)

    def finish(self) -> None:
        self.end("FINISHED")

    def fail(self, error: BaseException) -> None:
        """FAILED, or KILLED when a stop signal (or a library's exit on one) ended the attempt."""
        self.end("KILLED" if signals.is_interruption(error) else "FAILED")

    def log_job_log(self, run_dir: Path) -> None:
        """The job log, complete up to now, as the run's train.log artifact."""
        if self.client is not None:
            store.log_job_log(self.client, self.run_id, run_dir)

    def end(self, status: str) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.client is not None:
            store.set_status(self.client, self.run_id, status)


def experiment_client(cfg: DictConfig, root: Path) -> tuple[Any, str | None]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store.tracking_uri(cfg.logger, root))
    experiment = store.retry(client.get_experiment_by_name, cfg.logger.experiment_name)
    return client, (experiment.experiment_id if experiment is not None else None)


def start_tracking(
    cfg: DictConfig, root: Path, final_dir: Path, resolved: dict[str, Any], provenance: dict[str, Any]
) -> Tracking:
    """The attempt's child run: earlier attempts of this folder left RUNNING are marked KILLED first."""
    if cfg.logger.offline:
        return Tracking()
    name = rundir.display_path(final_dir, root)
    client, experiment_id = experiment_client(cfg, root)
    if experiment_id is not None and store.end_interrupted_runs(client, experiment_id, name):
        log.info("[%s] an interrupted earlier attempt was marked KILLED in MLflow", run_label(cfg))
    uri = store.tracking_uri(cfg.logger, root)
    logger = DeferredFinishMLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        run_name=run_label(cfg),
        tracking_uri=uri,
        tags=store.run_tags(
            cfg.init.name,
            cfg.seed,
            name,
            root,
            {**numerics.mlflow_tags(provenance), **machine_tags(provenance["device"])},
        ),
        artifact_location=store.artifact_location(uri, root),
    )
    store.retry(lambda: logger.experiment)  # creates the run
    tracking = Tracking(
        logger, logger.experiment, logger.run_id, store.heartbeat(logger.experiment, logger.run_id)
    )
    try:
        store.log_params(logger.experiment, logger.run_id, resolved)
    except BaseException as error:
        tracking.fail(error)
        raise
    return tracking


def resume(cfg: DictConfig, final_dir: Path, staging: Path, identity: str) -> dict[str, Any] | None:
    """The metrics of ``final_dir`` when it already holds this run; its MLflow run is made FINISHED if a
    kill left it RUNNING after the marker, and other attempts' leftovers are marked KILLED."""
    rundir.recover(final_dir)
    if not rundir.is_complete(final_dir, identity):
        return None
    log.info("[%s] complete with the same config and code: skipped", run_label(cfg))
    root = repo_root()
    if not cfg.logger.offline:
        client, experiment_id = experiment_client(cfg, root)
        recorded = recorded_run_id(final_dir)
        store.confirm_finished(client, recorded)
        if experiment_id is not None:
            store.end_interrupted_runs(
                client, experiment_id, rundir.display_path(final_dir, root), keep=recorded
            )
    if rundir.remove_owned(staging):
        rundir.prune_empty(staging.parent, final_dir.parent)
    return rundir.read_json(final_dir / "metrics.json")


@dataclass
class Outcome:
    metrics: dict[str, Any]
    history: pd.DataFrame
    timing: dict[str, Any] = field(default_factory=dict)
    numerics: dict[str, Any] = field(default_factory=dict)  # the arithmetic in effect: numerics.json
    mlflow_run_id: str | None = None  # provenance.json: which MLflow run holds this run (not a result)
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # file name: state dict
    layer_stats: pd.DataFrame | None = None  # layer_stats.csv, when module.layer_stats_every_n_steps is set
    test_predictions: np.ndarray | None = (
        None  # test_predictions.npy: [true class, predicted class] per image
    )


def job_device(cfg: DictConfig, job_index: int) -> tuple[str, list[int] | int, str]:
    accelerator, devices = resolve_device(cfg.trainer.accelerator, job_index)
    return accelerator, devices, f"cuda:{devices[0]}" if isinstance(devices, list) else "cpu"


def history_frame(recorder: RunRecorder) -> pd.DataFrame:
    """history.csv: the recorder's rows in long format."""
    return pd.DataFrame(recorder.rows, columns=["epoch", "step", "metric", "value"])


def timing_record(
    started: float,
    setup_seconds: float,
    fit_seconds: float,
    recorder: RunRecorder,
    eval_seconds: float,
    threads: int,
    device: str,
) -> dict[str, Any]:
    """timing.json: where the wall time went (apart from the results, which must diff byte for byte)."""
    return {
        "wall_seconds": time.perf_counter() - started,
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        **recorder_timing(recorder),
        "eval_seconds": eval_seconds,
        "logging_seconds": recorder.logging_seconds,
        "process_start_to_training_seconds": recorder.process_start_to_training,
        "process_cpu_to_training_seconds": recorder.process_cpu_to_training,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": device,
        "torch_threads": threads,
        "torch_version": torch.__version__,
    }


def run_metrics(
    cfg: DictConfig, module: Member, datamodule: MNISTDataModule, history: pd.DataFrame
) -> dict[str, Any]:
    """metrics.json: the final test pass, the last epoch's train loss, thresholds, symmetry, divergence, from
    the run's record (``module``: its member of the stack, initstudy.train.members)."""
    test, eval_split, divergence = module.test_evaluation, datamodule.eval.name, module.divergence
    assert test is not None, "trainer.test did not run"
    final_train = history[history.metric == "train/loss"].value
    if divergence:
        log.warning("[%s] diverged at step %d (epoch %d); last finite loss %s", run_label(cfg),
                    divergence.step, divergence.epoch, divergence.last_finite_loss)  # fmt: skip
    return {
        "init": cfg.init.name,
        "seed": cfg.seed,
        "test/acc": test.acc,
        "test/loss": test.loss,
        "train/loss": float(final_train.iloc[-1]) if len(final_train) else None,
        **(
            {
                f"{eval_split}/acc": module.evaluations[-1].acc,
                f"{eval_split}/loss": module.evaluations[-1].loss,
            }
            if eval_split != "test"
            else {}
        ),
        "epochs_completed": len(final_train),
        "steps_completed": module.total_steps,
        "train/loss_auc": module.mean_step_loss(),
        **thresholds_reached(history, eval_split),
        **evaluation_minimum(history, eval_split),
        **symmetry_diagnostics(module.model, test, datamodule.test.labels),
        "diverged": divergence is not None,
        "diverged_at_step": divergence.step if divergence else None,
        "diverged_at_epoch": divergence.epoch if divergence else None,
        "last_finite_loss": divergence.last_finite_loss if divergence else None,
    }


def recorder_timing(recorder: RunRecorder) -> dict[str, Any]:
    """Per-epoch wall times; they include the epoch's evaluation pass and MLflow write (also given apart)."""
    seconds = recorder.epoch_seconds
    return {
        "epoch_seconds": seconds,
        "seconds_per_epoch": float(pd.Series(seconds).median()) if seconds else None,
    }


def write_results(staging: Path, resolved: dict[str, Any], outcome: Outcome) -> None:
    """The run folder's result files (timings apart from results, so that results can be diffed)."""
    atomic.write_text(staging / "history.csv", outcome.history.to_csv(index=False))
    if outcome.layer_stats is not None:
        atomic.write_text(staging / rundir.LAYER_STATS, outcome.layer_stats.to_csv(index=False))
    for name, state in outcome.weights.items():
        weights.save(state, staging / name)
    if outcome.test_predictions is not None:
        write_predictions(staging / rundir.PREDICTIONS, outcome.test_predictions)
    atomic.write_json(staging / "metrics.json", outcome.metrics)
    atomic.write_json(staging / "timing.json", outcome.timing)
    # The arithmetic in effect (profile, kernels, threads, device): the same bytes on every machine that runs
    # the same profile, like metrics.json. The machine, the software and the MLflow run are provenance.json,
    # which differs between two machines that agree on every result (kept out of DVC's hash: .dvcignore).
    atomic.write_json(staging / "numerics.json", outcome.numerics)
    atomic.write_json(
        staging / "provenance.json",
        {**software(), "machine": numerics.machine(outcome.numerics.get("device", "cpu")),
         "mlflow_run_id": outcome.mlflow_run_id},
    )  # fmt: skip
    atomic.write_text(staging / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))


def write_predictions(path: Path, predictions: np.ndarray) -> None:
    """The test predictions as a .npy file (uint8, no pickle): its bytes depend on the classes alone."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(predictions, dtype=np.uint8), allow_pickle=False)
    atomic.write_bytes(path, buffer.getvalue())


def software() -> dict[str, Any]:
    """Which software made the run: package versions, the lock's digest, the git commit (provenance.json)."""
    return {
        "packages": provenance.package_versions(),
        "requirements_lock_sha256": provenance.lock_digest(),
        **core_provenance.git_state(repo_root()),
    }


def software_tags() -> dict[str, str]:
    versions = {f"version.{name}": version for name, version in provenance.package_versions().items()}
    return {**versions, "requirements_lock_sha256": provenance.lock_digest() or "none"}


def machine_tags(device: str) -> dict[str, str]:
    """The software and the machine as MLflow tags (``numerics.cpu_model``, ``version.torch``, ...)."""
    facts = numerics.machine(device)
    return {**software_tags(), **{f"numerics.{key}": str(value) for key, value in facts.items()}}


def recorded_run_id(run_dir: Path) -> str | None:
    """The MLflow run of a finished run folder (provenance.json; the marker of runs made before it moved)."""
    path = run_dir / "provenance.json"
    recorded = rundir.read_json(path).get("mlflow_run_id") if path.is_file() else None
    return recorded or (rundir.read_marker(run_dir) or {}).get("mlflow_run_id")


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


_runs_started = 0  # runs (or stacked groups) this process has begun: a sweep's launcher runs many in one


def collect_previous_run() -> None:
    """The basic and stacked launchers run many jobs in one process; Lightning's objects reference each other
    in cycles, so the previous job's data set is freed only by the cycle collector: run it before the next
    job. Not before the first (a full collection after the imports costs ~0.2 s of a run's start-up)."""
    global _runs_started
    if _runs_started:
        gc.collect()
    _runs_started += 1


@dataclass
class Attempt:
    """One attempt at a run folder, from its staging folder to its MLflow child run: what the per-run
    bookkeeping needs before and after the fit (one per run; a stacked group has one per member)."""

    cfg: DictConfig
    final_dir: Path
    staging: Path
    identity: str
    resolved: dict[str, Any]
    numerics: dict[str, Any]
    run: Tracking
    started: float


def begin(
    cfg: DictConfig, final_dir: Path, staging: Path, identity: str, job_index: int, started: float
) -> Attempt:
    """A fresh staging folder, the numerics in effect and the attempt's MLflow child run."""
    rundir.begin_attempt(staging)
    resolved = resolved_config(cfg)
    described = job_numerics(cfg, job_index)
    # A smoke test records nothing, as Lightning's fast_dev_run logs nothing (debug=fast_dev_run is offline).
    run = (
        Tracking() if is_smoke_test(cfg) else start_tracking(cfg, repo_root(), final_dir, resolved, described)
    )
    return Attempt(cfg, final_dir, staging, identity, resolved, described, run, started)


def discard(attempt: Attempt, outcome: Outcome) -> dict[str, Any]:
    """A smoke test's end: its staging folder goes (Hydra's files and log included), so that no folder ever
    holds a "complete" run that trained a few batches; the metrics are logged and returned, never kept."""
    rundir.remove_owned(attempt.staging)
    rundir.prune_empty(attempt.staging.parent, attempt.final_dir.parent)
    rundir.prune_empty(attempt.final_dir.parent, repo_root())  # the folders Hydra made for it, while empty
    log.info("[%s] fast_dev_run: test/acc %.4f  test/loss %.4f after %d optimizer steps; a smoke test, nothing "
             "kept (no run folder, no MLflow run)", run_label(attempt.cfg), outcome.metrics["test/acc"],
             outcome.metrics["test/loss"], outcome.metrics["steps_completed"])  # fmt: skip
    return outcome.metrics


def finish(attempt: Attempt, outcome: Outcome) -> dict[str, Any]:
    """Results written, marker, promotion, MLflow FINISHED (the caller marks the run FAILED if this raises);
    the run's metrics. A smoke test (fast_dev_run) is discarded instead (:func:`discard`)."""
    if is_smoke_test(attempt.cfg):
        return discard(attempt, outcome)
    outcome.numerics, outcome.mlflow_run_id = attempt.numerics, attempt.run.run_id
    pause_point("trained")
    record(attempt.staging, attempt.resolved, outcome, attempt.run)
    metrics, seconds = outcome.metrics, time.perf_counter() - attempt.started
    summary = (f"[{run_label(attempt.cfg)}] test/acc {metrics['test/acc']:.4f}  "
               f"test/loss {metrics['test/loss']:.4f}  ({seconds:.1f} s)")  # fmt: skip
    complete(attempt.staging, attempt.final_dir, attempt.identity, attempt.run, summary)
    return outcome.metrics


def job_numerics(cfg: DictConfig, job_index: int) -> dict[str, Any]:
    """The numerics in effect for this job (numerics.json and MLflow tags). The profile is applied first: a
    process's first job would otherwise describe the state before it (e.g. no flush-to-zero), and the record
    would depend on which job a launcher's process happened to run first."""
    profile = numerics.from_config(cfg.numerics)
    numerics.apply_in_process(profile)
    return numerics.describe(profile, job_device(cfg, job_index)[2])


def record(staging: Path, resolved: dict[str, Any], outcome: Outcome, run: Tracking) -> None:
    """The result files in the staging folder, then the final metrics and the folder to MLflow."""
    write_results(staging, resolved, outcome)
    if run.client is not None:
        store.log_final(run.client, run.run_id, outcome.metrics, staging, repo_root())


def complete(staging: Path, final_dir: Path, identity: str, run: Tracking, summary: str) -> None:
    """Marker, promotion into place, MLflow FINISHED: in this order, so that an interruption between any
    two leaves a state that resume() recognises (initstudy.runs.rundir). The run's last log line
    (``summary``) comes before its job log goes to MLflow, so the artifact is the run folder's whole file."""
    pause_point("before-marker")
    rundir.write_marker(staging, identity)
    pause_point("before-promote")
    rundir.promote(staging, final_dir)
    log.info(summary)
    run.log_job_log(final_dir)
    pause_point("before-finished")
    run.finish()
