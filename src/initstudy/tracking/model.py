"""A finished run as MLflow expects a model and its data: ``mlflow.pytorch`` model and ``log_input`` datasets.

Both are built from the run folder alone (config.yaml, weights_final.pt, the data files' digests that the
pre-flight verified), so a live run and one imported later (initstudy.tracking.importer) log the same thing,
and the logged weights are the bytes the run folder keeps. They are logged after training is complete: the
network is constructed under ``torch.random.fork_rng`` (construction draws default initial weights, which
the saved ones replace), so no result, file or random stream of the run changes.

The model's environment is the lock's pins (``requirements.lock``), not what MLflow would infer from the
installed packages: a model loaded elsewhere then names the torch that trained it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from initstudy.core.provenance import CHECKOUT, LOCK_FILE, package_versions

MODEL_NAME = "model"  # the logged model's name in its run (``runs:/<run id>/model``)
EXAMPLE_IMAGES = 5  # test images in the input example and the signature's batch
# The distributions a loaded model needs, with the lock's names (pytorch-lightning: Lightning as installed).
MODEL_PACKAGES = ("torch", "torchvision", "pytorch-lightning", "mlflow")
# Which IDX files each context of log_input reads (the validation split is carved from the training files).
DATA_FILES = {
    "training": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_SUBDIR = Path("MNIST") / "raw"  # under data.root: torchvision's layout
DIGEST_CHARS = 32  # MLflow stores a dataset digest in at most 36 characters


def log_run_model(client: Any, run_id: str, run_dir: Path, root: Path) -> Any:
    """Log ``run_dir``'s final network to ``run_id`` as an ``mlflow.pytorch`` model named ``model``, with a
    signature and an input example from real test images; returns MLflow's ModelInfo."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    cfg = read_config(run_dir)
    model = final_network(cfg, run_dir)
    example = example_batch(cfg, root)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    # Created here, in the run's experiment: log_model alone would file it under the fluent API's current
    # experiment (Default), where the run's page and the experiment's model list do not look.
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    # MLflow's default format, pt2 (torch.export): loads without this project's code and runs no pickle.
    with tracking_uri(client.tracking_uri), torch.random.fork_rng(devices=[]):
        return mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=pinned_requirements(),
            run_id=run_id,
            model_id=logged.model_id,
        )


def read_config(run_dir: Path) -> DictConfig:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert isinstance(cfg, DictConfig)
    return cfg


def final_network(cfg: DictConfig, run_dir: Path) -> Any:
    """config.yaml's network with weights_final.pt, on the CPU, in eval mode; the process's random streams
    left as they were."""
    import torch
    from hydra.utils import instantiate

    from initstudy.nn import weights

    with torch.random.fork_rng(devices=[]):  # construction draws initial weights, replaced just below
        model = instantiate(cfg.model)
    model.load_state_dict(weights.load(run_dir / weights.FINAL), strict=True)
    return model.eval()


def example_batch(cfg: DictConfig, root: Path) -> Any:
    """The first test images as the network reads them (float32 in [0, 1], one row of 784 pixels each)."""
    from initstudy.data.datamodule import read_mnist, scale

    pixels, _ = read_mnist(root / cfg.data.root, train=False)
    return scale(pixels[:EXAMPLE_IMAGES]).numpy()


def pinned_requirements(lock: Path | None = None) -> list[str]:
    """``name==version`` of :data:`MODEL_PACKAGES` as requirements.lock pins them (the installed versions
    where there is no lock, e.g. a non-editable install)."""
    path = lock or CHECKOUT / LOCK_FILE
    text = path.read_text() if path.is_file() else ""
    installed = package_versions()
    pins = []
    for name in MODEL_PACKAGES:
        found = re.search(rf"^{re.escape(name)}==(\S+)", text, flags=re.MULTILINE)
        version = found.group(1) if found else installed.get(name) or _installed(name)
        pins.append(f"{name}=={version}")
    return pins


def _installed(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, a ``models:/`` source) at ``uri`` for a moment. MLflow mirrors its
    setting in $MLFLOW_TRACKING_URI, which the study reads too (initstudy.tracking.store.tracking_uri): the
    variable is put back as it was, unset included, and with it MLflow's setting."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  (None: unset, as before)


# ---- the data, as MLflow datasets --------------------------------------------------------------------------


def datasets(cfg: Mapping[str, Any], root: Path) -> list[Any]:
    """One ``DatasetInput`` per context (training, test): the IDX files' folder as its source, a digest of
    their SHA-256 (config.yaml's download.sha256, which the pre-flight verified before the run trained) and
    each file's SHA-256 as an input tag."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    recorded = {str(k): str(v).lower() for k, v in (cfg["download"]["sha256"] or {}).items()}
    folder = (root / str(cfg["data"]["root"]) / MNIST_SUBDIR).resolve()
    inputs = []
    for context, files in DATA_FILES.items():
        digests = {name: recorded.get(name, "unknown") for name in files}
        dataset = MetaDataset(
            source=LocalArtifactDatasetSource(folder.as_uri()),
            name=f"mnist-{context}",
            digest=combined_digest(digests),
        )
        tags = [InputTag("mlflow.data.context", context)]
        tags += [InputTag(f"sha256.{name}", digest) for name, digest in digests.items()]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
    return inputs


def combined_digest(digests: Mapping[str, str]) -> str:
    """One short digest of the files' SHA-256 (MLflow's digest column holds 36 characters)."""
    text = "".join(f"{name}:{digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


# What a database says when two runs insert the same new dataset at once (PostgreSQL, MySQL, SQLite).
DUPLICATE = ("duplicate key", "duplicate entry", "unique constraint failed")


def log_data(client: Any, run_id: str, cfg: Mapping[str, Any], root: Path, attempts: int = 3) -> None:
    """The run's training and test data, as ``mlflow.log_input`` records them (``MlflowClient.log_inputs`` with
    the dataset entity, the client's form of it). Every run of a sweep logs the same two datasets: MLflow stores
    each once per experiment, and jobs that insert it at the same moment collide (a unique-key error, seen with
    8 SLURM jobs on PostgreSQL); the call is repeated, and then finds the dataset stored."""
    inputs = datasets(cfg, root)
    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as error:  # MlflowException / RestException wrapping the database's error
            if attempt == attempts - 1 or not any(word in str(error).lower() for word in DUPLICATE):
                raise
