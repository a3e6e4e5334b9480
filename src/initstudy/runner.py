"""Train one (initializer, seed) configuration into its run folder, and log it to MLflow.

A run folder is *complete* only once ``.complete`` exists and records the hash of the config that produced
it; the marker is written last and atomically. A rerun of a complete folder with the same config returns
at once; anything else in the folder (a killed run, a changed config) is discarded and recomputed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from initstudy import atomic, numerics, tracking
from initstudy.config import config_hash, repo_root
from initstudy.data.datamodule import MNISTDataModule
from initstudy.module import InitStudyModule
from initstudy.recorder import RunRecorder

log = logging.getLogger(__name__)

COMPLETION_MARKER = ".complete"
THRESHOLDS = (0.95, 0.97, 0.98)
KEEP_ON_RESTART = {".hydra", "train.log"}  # written by Hydra for this very attempt


def run_label(cfg: DictConfig) -> str:
    return f"{cfg.init.name}/seed_{cfg.seed}"


# The modules whose code decides a run's numbers. Their fingerprint is part of the completion marker: changing
# the training code recomputes complete runs (changing the report, the CLI or the docs does not).
TRAINING_CODE = (
    "runner.py", "module.py", "recorder.py", "model.py", "initializers.py", "data/datamodule.py", "numerics.py"
)  # fmt: skip


def code_fingerprint() -> str:
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def is_complete(run_dir: Path, expected_hash: str) -> bool:
    """The marker exists and records this config and this training code."""
    marker = run_dir / COMPLETION_MARKER
    try:
        recorded = json.loads(marker.read_text())
        return recorded["config_hash"] == expected_hash and recorded["code_fingerprint"] == code_fingerprint()
    except (OSError, ValueError, KeyError):
        return False


def discard_partial(run_dir: Path) -> None:
    for entry in run_dir.iterdir() if run_dir.exists() else ():
        if entry.name in KEEP_ON_RESTART:
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def quiet_lightning() -> None:
    """Lightning's start-up banner (accelerator lines, tips) says nothing a run's log does not already say."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_process(cfg: DictConfig) -> int:
    """Per-job process state, set explicitly: launchers reuse processes, so nothing may leak between jobs.
    Threads, flush-to-zero and deterministic algorithms come from the numerics profile, which also checks
    that the process runs the kernels it pins (initstudy.numerics); returns the thread count."""
    threads = numerics.apply_in_process(numerics.from_config(cfg.numerics), cfg.trainer.num_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return threads


def thresholds_reached(history: pd.DataFrame, split: str, steps_per_epoch: int) -> dict[str, int | None]:
    acc = history[history.metric == f"{split}/acc"].sort_values("epoch")
    reached: dict[str, int | None] = {}
    for threshold in THRESHOLDS:
        hits = acc[acc.value >= threshold]
        epoch = int(hits.epoch.iloc[0]) if len(hits) else None
        key = f"{round(threshold * 100)}"
        reached[f"epochs_to_{key}"] = epoch
        reached[f"steps_to_{key}"] = None if epoch is None else epoch * steps_per_epoch
    return reached


@torch.inference_mode()
def symmetry_diagnostics(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """Evidence for statements about symmetry: distinct weight rows per hidden layer after training, and
    how many distinct classes the network predicts (1 = a constant prediction, whose accuracy is then the
    share of that class in the test set)."""
    hidden = model.linear_layers()[:-1]
    predictions = torch.cat([model(x).argmax(dim=1) for x in images.split(10_000)])
    counts = torch.bincount(labels, minlength=10)
    return {
        "distinct_hidden_units": [int(torch.unique(layer.weight, dim=0).shape[0]) for layer in hidden],
        "hidden_units": [int(layer.out_features) for layer in hidden],
        "test/distinct_predictions": int(torch.unique(predictions).numel()),
        "test/majority_class": int(counts.argmax()),
        "test/majority_class_share": float(counts.max() / counts.sum()),
    }


def init_batch(train_images: torch.Tensor, initializer: Any, seed: int) -> torch.Tensor:
    """A seeded random batch of training images for data-dependent initializers (LSUV)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train_images), generator=generator)[: initializer.batch_size]
    return train_images[index.to(train_images.device)]


def build_model(cfg: DictConfig, train_images: torch.Tensor) -> tuple[torch.nn.Module, Any]:
    """The network of ``cfg`` at step 0: constructed, then initialized (with a data batch if it needs one).
    Call after seeding: the draws then equal the training run's."""
    model = instantiate(cfg.model)
    initializer = instantiate(cfg.init)
    batch = init_batch(train_images, initializer, cfg.seed) if initializer.needs_data else None
    initializer(model, batch=batch)
    return model, initializer


def resolve_device(accelerator: str, job_index: int) -> tuple[str, list[int] | int]:
    """(accelerator, devices) for this job: one GPU per job, round-robin over the GPUs by job index, so
    that parallel jobs (joblib) on a multi-GPU machine each get their own; the CPU otherwise."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "gpu", [job_index % torch.cuda.device_count()]
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"trainer.accelerator={accelerator} but torch sees no CUDA device")
    return "cpu", 1


def params_md5(root: Path) -> str:
    path = root / "params.yaml"
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else "unknown"


def make_logger(cfg: DictConfig, root: Path, extra_tags: dict[str, str] | None = None) -> Any:
    if cfg.logger.offline:
        return None
    from pytorch_lightning.loggers import MLFlowLogger

    uri = tracking.tracking_uri(cfg.logger, root)
    tags = {
        "initializer": cfg.init.name,
        "seed": str(cfg.seed),
        "params_md5": params_md5(root),
        **tracking.git_state(root),
        **(extra_tags or {}),
    }
    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
        if experiment is not None and tracking.end_interrupted_runs(
            client, experiment.experiment_id, parent, run_label(cfg)
        ):
            log.info("[%s] an interrupted earlier attempt was marked KILLED in MLflow", run_label(cfg))
    return MLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        run_name=run_label(cfg),
        tracking_uri=uri,
        tags=tags,
        artifact_location=tracking.artifact_location(uri, root),
    )


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("download", None)
    return pd.json_normalize(container, sep=".").iloc[0].to_dict()


def train_run(cfg: DictConfig, run_dir: Path, job_index: int = 0, position: str = "") -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` unless it is already complete; return its metrics."""
    started = time.perf_counter()
    # The basic launcher runs every job of a sweep in one process; Lightning's objects reference each other
    # in cycles, so the previous job's data set (~220 MB) is freed only by the cycle collector. Run it now.
    gc.collect()
    root = repo_root()
    digest = config_hash(cfg)
    if is_complete(run_dir, digest):
        log.info("[%s] complete with the same config and code: skipped", run_label(cfg))
        return json.loads((run_dir / "metrics.json").read_text())
    discard_partial(run_dir)
    threads = configure_process(cfg)
    quiet_lightning()
    accelerator, devices = resolve_device(cfg.trainer.accelerator, job_index)
    device = f"cuda:{devices[0]}" if isinstance(devices, list) else "cpu"

    datamodule = MNISTDataModule(
        root=root / cfg.data.root,
        batch_size=cfg.data.batch_size,
        seed=cfg.seed,
        train_size=cfg.data.train_size,
        val_fraction=cfg.data.val_fraction,
        eval_batch_size=cfg.data.eval_batch_size,
        steps_per_chunk=cfg.trainer.steps_per_chunk,
        device=device,
    )
    datamodule.setup()  # before the Trainer: the module needs steps_per_epoch
    model, _ = build_model(cfg, datamodule.train.images)
    module = InitStudyModule(
        model, instantiate(cfg.optimizer), datamodule.steps_per_epoch, cfg.trainer.stop_on_divergence
    )
    eval_split = datamodule.eval.name
    recorder = RunRecorder(
        position + run_label(cfg), eval_split, cfg.trainer.log_every_n_steps, datamodule.steps_per_epoch
    )
    # What numerics were in effect (profile, kernels, threads, CPU, device): numerics.json and MLflow tags,
    # apart from metrics.json, which must stay byte-identical across machines under numerics=portable.
    provenance = numerics.describe(numerics.from_config(cfg.numerics), device)
    logger = make_logger(cfg, root, numerics.mlflow_tags(provenance))
    if logger is not None:
        logger.log_hyperparams(flat_params(cfg))

    with warnings.catch_warnings():
        # Lightning suggests DataLoader workers; our batches are slices of device-resident tensors.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for us to change.
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        trainer = pl.Trainer(
            max_epochs=cfg.trainer.max_epochs,
            accelerator=accelerator,
            devices=devices,
            deterministic=cfg.numerics.deterministic,
            precision=cfg.trainer.precision,
            logger=logger or False,
            callbacks=[recorder],
            enable_checkpointing=False,
            # A live bar (epoch, chunk of steps) only on a terminal; CI, DVC and SLURM logs get the recorder's
            # one line per epoch instead.
            enable_progress_bar=sys.stderr.isatty(),
            enable_model_summary=False,
            num_sanity_val_steps=-1,
            default_root_dir=str(run_dir),
            log_every_n_steps=1,  # Lightning's own logging is unused (see RunRecorder); this silences its hint
        )
        setup_seconds = time.perf_counter() - started
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        fit_seconds = time.perf_counter() - fit_started

    test = module.evaluate(datamodule.test.images, datamodule.test.labels, cfg.data.eval_batch_size)
    symmetry = symmetry_diagnostics(model, datamodule.test.images, datamodule.test.labels)
    history = pd.DataFrame(recorder.rows, columns=["epoch", "step", "metric", "value"])
    epochs_completed = sum(history.metric == "train/loss")
    final_train = history[history.metric == "train/loss"].value
    divergence = module.divergence
    metrics = {
        "init": cfg.init.name,
        "seed": cfg.seed,
        "test/acc": test.acc,
        "test/loss": test.loss,
        "train/loss": float(final_train.iloc[-1]) if len(final_train) else None,
        **({f"{eval_split}/acc": module.evaluations[-1].acc} if eval_split != "test" else {}),
        "epochs_completed": int(epochs_completed),
        "steps_completed": module.total_steps,
        **thresholds_reached(history, eval_split, datamodule.steps_per_epoch),
        **symmetry,
        "diverged": divergence is not None,
        "diverged_at_step": divergence.step if divergence else None,
        "diverged_at_epoch": divergence.epoch if divergence else None,
        "last_finite_loss": divergence.last_finite_loss if divergence else None,
    }
    timing = {
        "wall_seconds": time.perf_counter() - started,
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        "epoch_seconds": recorder.epoch_seconds,
        "seconds_per_epoch": float(pd.Series(recorder.epoch_seconds).median())
        if recorder.epoch_seconds
        else None,
        # epoch_seconds include the per-epoch evaluation and MLflow write; these two are also measured apart.
        "eval_seconds": module.eval_seconds,
        "logging_seconds": recorder.logging_seconds,
        "process_start_to_training_seconds": recorder.process_start_to_training,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(module.device),
        "torch_threads": threads,
        "torch_version": torch.__version__,
    }
    atomic.write_text(run_dir / "history.csv", history.to_csv(index=False))
    atomic.write_json(run_dir / "metrics.json", metrics)
    atomic.write_json(run_dir / "timing.json", timing)
    atomic.write_json(run_dir / "numerics.json", provenance)
    atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if logger is not None:
        _log_final(logger, metrics, run_dir)
    marker = {
        "config_hash": digest,
        "code_fingerprint": code_fingerprint(),
        "mlflow_run_id": getattr(logger, "run_id", None),
    }
    atomic.write_json(run_dir / COMPLETION_MARKER, marker)
    if divergence:
        log.warning(
            "[%s] diverged at step %d (epoch %d); last finite loss %s",
            run_label(cfg),
            divergence.step,
            divergence.epoch,
            divergence.last_finite_loss,
        )
    log.info(
        "[%s] test/acc %.4f  test/loss %.4f  (%.1f s)",
        run_label(cfg),
        test.acc,
        test.loss,
        timing["wall_seconds"],
    )
    return metrics


def _log_final(logger: Any, metrics: dict[str, Any], run_dir: Path) -> None:
    client, run_id = logger.experiment, logger.run_id
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    client.log_batch(
        run_id,
        metrics=[Metric(f"final/{k}", v, now, 0) for k, v in numeric.items() if math.isfinite(v)],
        tags=[RunTag("diverged", str(metrics["diverged"]).lower())],
    )
    client.log_artifacts(run_id, str(run_dir))
