"""A finished run as a model to use again: found by folder, MLflow run id or registered model, checked, loaded.

What ``initstudy evaluate`` and ``initstudy predict`` share. A run's numbers are reproducible only under the
arithmetic it was trained with, so the order matters: the run folder is found and read (config.yaml,
numerics.json) without torch; the run's numerics profile is applied before torch is imported
(:func:`initstudy.config.numerics.apply_before_torch`), and the arithmetic then in effect is compared with the
run's record; only then are the weights loaded into the network that config.yaml describes. Every mismatch (an
incomplete folder, weights of another architecture, test files of other bytes, a machine that cannot run the
profile) is refused with one line (:class:`TrainedRunError`) before any result is printed.

torch is imported inside functions only, for that reason.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from initstudy.config import numerics
from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root
from initstudy.runs import rundir
from initstudy.tracking.store import RUN_DIR_TAG

if TYPE_CHECKING:
    import torch
    from torch import nn

NUMERICS_FILE = "numerics.json"
CONFIG_FILE = "config.yaml"
REGISTRY_PREFIX = "models:/"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # an MLflow run id
# What decides the numbers of a run (numerics.json): each must be the same in the evaluating process. The
# device is compared by kind (cpu, cuda), not index.
ARITHMETIC_KEYS = (
    "cpu_capability",
    "mkl_cbwr",
    "onednn_max_cpu_isa",
    "torch_threads",
    "flush_denormal",
    "deterministic_algorithms",
    "float32_matmul_precision",
    "cublas_workspace_config",
)
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_SUBDIR = Path("MNIST") / "raw"  # under data.root, where torchvision's MNIST reads the IDX files


class TrainedRunError(ConfigError):
    """A run that cannot be used as asked; the message is one line naming what and why."""


@dataclass
class TrainedRun:
    folder: Path
    cfg: DictConfig
    metrics: dict[str, Any]
    recorded_numerics: dict[str, Any]
    device: str  # where it is evaluated: the kind of device it was trained on
    model: nn.Module | None = None


# ---- which folder ----------------------------------------------------------------------------------------


def resolve(reference: str, tracking_uri: str | None = None) -> Path:
    """The run folder that ``reference`` names: a folder, an MLflow run id (its run-folder tag) or
    ``models:/<name>/<version>`` (the registered version's run, then that run's folder)."""
    if reference.startswith(REGISTRY_PREFIX):
        return folder_of_run(registered_run_id(reference, tracking_uri), tracking_uri)
    path = Path(reference)
    if path.is_dir():
        return path
    if RUN_ID.match(reference):
        return folder_of_run(reference, tracking_uri)
    raise TrainedRunError(
        f"run {reference!r} is neither a run folder (e.g. runs/he_uniform/seed_0), an MLflow run id (32 hex "
        f"digits) nor {REGISTRY_PREFIX}<name>/<version>"
    )


def store_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the study's embedded store (as training uses it)."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _client(tracking_uri: str | None) -> Any:
    import mlflow

    uri = store_uri(tracking_uri)
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if path is not None and not Path(path).is_file():
        raise TrainedRunError(f"no MLflow store at {path}: give the run folder, or --tracking-uri")
    return mlflow.MlflowClient(tracking_uri=uri)


def registered_run_id(reference: str, tracking_uri: str | None) -> str:
    from mlflow.exceptions import MlflowException

    parts = reference.removeprefix(REGISTRY_PREFIX).split("/")
    if len(parts) != 2 or not all(parts) or not parts[1].isdigit():
        raise TrainedRunError(f"model {reference!r}: expected {REGISTRY_PREFIX}<name>/<version number>")
    try:
        version = _client(tracking_uri).get_model_version(parts[0], parts[1])
    except MlflowException as error:
        raise TrainedRunError(f"model {reference!r} is not in the registry ({error.error_code})") from None
    if not version.run_id:
        raise TrainedRunError(f"model {reference!r} names no MLflow run, so no run folder")
    return str(version.run_id)


def folder_of_run(run_id: str, tracking_uri: str | None) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        run = _client(tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise TrainedRunError(f"MLflow run {run_id} is not in the store ({error.error_code})") from None
    name = run.data.tags.get(RUN_DIR_TAG)
    if not name:
        raise TrainedRunError(f"MLflow run {run_id} has no {RUN_DIR_TAG} tag: it is not a run of this study")
    folder = Path(name) if Path(name).is_absolute() else repo_root() / name
    if not folder.is_dir():
        raise TrainedRunError(f"MLflow run {run_id}'s run folder {name} is not here (dvc pull, or run it)")
    return folder


# ---- reading and checking (no torch) ------------------------------------------------------------------------


def read(folder: Path) -> TrainedRun:
    """The finished run in ``folder``: its config, metrics and recorded arithmetic; refused if incomplete."""
    from initstudy.nn.weights import FINAL

    needed = (CONFIG_FILE, "metrics.json", NUMERICS_FILE, FINAL, rundir.PREDICTIONS)
    missing = [name for name in (rundir.MARKER, *needed) if not (folder / name).is_file()]
    if missing:
        raise TrainedRunError(
            f"{folder} is not a finished run folder (no {', '.join(missing)}): train it first, or dvc pull"
        )
    cfg = OmegaConf.load(folder / CONFIG_FILE)
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "numerics" not in cfg:
        raise TrainedRunError(f"{folder / CONFIG_FILE} is not a run's config (no model or numerics)")
    recorded = rundir.read_json(folder / NUMERICS_FILE)
    device = "cuda" if str(recorded.get("device", "cpu")).startswith("cuda") else "cpu"
    return TrainedRun(folder, cfg, rundir.read_json(folder / "metrics.json"), recorded, device)


def test_files(run: TrainedRun) -> dict[str, Path]:
    return {name: repo_root() / run.cfg.data.root / MNIST_SUBDIR / name for name in TEST_FILES}


def check_data(run: TrainedRun) -> dict[str, Path]:
    """The test files, each with the SHA-256 the run recorded (config.yaml's download.sha256), if it did."""
    files = test_files(run)
    recorded = OmegaConf.select(run.cfg, "download.sha256", default=None) or {}
    for name, path in files.items():
        if not path.is_file():
            raise TrainedRunError(f"test file {path} is missing: initstudy data (or dvc pull) first")
        expected = str(recorded.get(name, "")).lower()
        if expected:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != expected:
                raise TrainedRunError(
                    f"test file {path} has sha256 {actual[:12]}..., the run was trained and tested with "
                    f"{expected[:12]}...: not the run's data"
                )
    return files


# ---- the run's arithmetic, then torch ------------------------------------------------------------------------


def apply_numerics(run: TrainedRun) -> None:
    """The run's profile in this process (before torch), then the arithmetic in effect compared with the run's
    numerics.json: a difference would change the numbers, so it is refused. An unpinned profile's thread
    count is the recorded one."""
    profile = numerics.from_config(run.cfg.numerics)
    recorded_threads = run.recorded_numerics.get("torch_threads")
    if profile.num_threads is None and isinstance(recorded_threads, int):
        os.environ["OMP_NUM_THREADS"] = str(recorded_threads)
    try:
        numerics.apply_before_torch(profile)
    except ConfigError as error:
        raise TrainedRunError(f"{run.folder}: {error}") from None
    import torch

    if run.device == "cuda" and not torch.cuda.is_available():
        raise TrainedRunError(f"{run.folder} was trained on a GPU ({run.recorded_numerics['device']}); torch "
                              "sees none here, and CPU results differ from GPU results by design")  # fmt: skip
    try:
        numerics.apply_in_process(profile)
    except ConfigError as error:
        raise TrainedRunError(f"{run.folder}: {error}") from None
    actual = numerics.describe(profile, "cuda:0" if run.device == "cuda" else "cpu")
    for key in ARITHMETIC_KEYS:
        if key in run.recorded_numerics and actual.get(key) != run.recorded_numerics[key]:
            raise TrainedRunError(
                f"{run.folder} was trained with {key}={run.recorded_numerics[key]} (numerics.json, "
                f"numerics={profile.name}); this machine runs {key}={actual.get(key)}: its numbers would differ"
            )


def load_model(run: TrainedRun) -> nn.Module:
    """config.yaml's network with weights_final.pt, on the run's device; refused if the two disagree."""
    from hydra.utils import instantiate

    from initstudy.nn import weights

    model = instantiate(run.cfg.model)
    state = weights.load(run.folder / weights.FINAL)
    check_architecture(run.folder, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    run.model = model.to(run.device).eval()
    return run.model


def check_architecture(
    folder: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]
) -> None:
    for name in sorted(expected.keys() | found.keys()):
        if name not in found or name not in expected:
            where = "config.yaml's model has" if name not in found else "weights_final.pt has"
            raise TrainedRunError(
                f"{folder}: {where} {name} and the other does not: weights and config differ"
            )
        if tuple(found[name].shape) != tuple(expected[name].shape):
            raise TrainedRunError(
                f"{folder}: weights_final.pt's {name} is {tuple(found[name].shape)}, config.yaml's model "
                f"needs {tuple(expected[name].shape)}: weights and config differ"
            )


def open_run(reference: str, tracking_uri: str | None = None, *, with_data: bool) -> TrainedRun:
    """Found, read, data checked (for a test pass), profile applied and model loaded: ready to use."""
    run = read(resolve(reference, tracking_uri))
    if with_data:
        check_data(run)
    apply_numerics(run)
    load_model(run)
    return run


def autocast(run: TrainedRun) -> Any:
    """The run's precision at inference: Lightning's bf16-mixed is autocast to bfloat16; else nothing."""
    import contextlib

    import torch

    if str(run.cfg.trainer.precision) == "bf16-mixed":
        return torch.autocast(run.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def logits_in_batches(run: TrainedRun, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The network's logits for uint8 pixels [N, 784], in the run's evaluation batches (data.eval_batch_size:
    the batching of its test pass, so each image's logits are the test pass's)."""
    import torch

    from initstudy.data.datamodule import ScaledPixels

    assert run.model is not None, "load_model first"
    out = []
    with torch.inference_mode(), autocast(run):
        for images in ScaledPixels(pixels.to(run.device)).split(int(run.cfg.data.eval_batch_size)):
            out.append(run.model(images))
    return out
