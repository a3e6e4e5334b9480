"""A sweep's job list, computed exactly as Hydra's basic sweeper will, before anything runs.

Knowing every job up front lets the launcher validate all of them (a bad value fails the whole sweep before
the first run, not at run 17) and write the manifest: the list of run folders that make up *this* sweep,
which is all the report reads, so a stale folder from an older sweep can never leak into a result.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from initstudy import atomic
from initstudy.config import ConfigError, compose_config, config_hash, repo_root, validate
from initstudy.data.config_check import validate_download
from initstudy.data.integrity import sha256_file
from initstudy.rundir import MANIFEST, run_identity

MANIFEST_NAME = MANIFEST


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]
    init: str
    seed: int
    run_dir: Path
    config_hash: str
    sweep_dir: Path | None  # None for a single run
    identity: str = ""  # rundir.run_identity: what the completion marker must record
    activation: str = "relu"
    hidden_sizes: tuple[int, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.hidden_sizes)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(plain overrides, sweep overrides such as ``init=zeros,he_uniform``)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(" ".join(str(error).split())) from None
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweep = [o.input_line for o in parsed if o.is_sweep_override()]
    return plain, sweep


def job_overrides(overrides: Sequence[str], multirun: bool) -> list[list[str]]:
    """Every job's overrides: the sweeper's params merged with the command line (which wins), as Hydra does."""
    plain, sweep = split_overrides(overrides)
    if not multirun:
        if sweep:
            raise ConfigError(f"{sweep[0]!r} sweeps several values: add --multirun (-m)")
        return [list(overrides)]
    base = compose_config(plain, return_hydra_config=True)
    params = base.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for job in itertools.chain.from_iterable(batches)]


def check_data(raw_dir: Path, expected: dict[str, str]) -> None:
    """Every MNIST file present with its canonical hash, or a one-line ConfigError naming the file."""
    for name, digest in expected.items():
        path = raw_dir / name
        if not path.is_file():
            raise ConfigError(
                f"data file {path} is missing; run `dvc repro download` (or python -m initstudy.data)"
            )
        actual = sha256_file(path)
        if actual != digest.lower():
            raise ConfigError(
                f"data file {path} fails verification (expected sha256 {digest}, got {actual}): wrong or "
                f"truncated; run `dvc repro download` to replace it"
            )


def read_labels(path: Path) -> np.ndarray:
    """An IDX label file's labels (the files are small; the header gives the count)."""
    data = path.read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def check_fits_data(cfg: DictConfig, raw_dir: Path) -> None:
    """Values that are valid alone but not for this data: sizes, the split, the class count."""
    train_labels = read_labels(raw_dir / "train-labels-idx1-ubyte")
    test_labels = read_labels(raw_dir / "t10k-labels-idx1-ubyte")
    available = len(train_labels)
    size = cfg.data.train_size
    if size is not None and size > available:
        raise ConfigError(
            f"invalid data.train_size={size}: the data has {available} training images (use at most that, "
            "or null)"
        )
    n = available if size is None else size
    n_val = round(n * cfg.data.val_fraction)
    if cfg.data.val_fraction > 0 and n_val == 0:
        raise ConfigError(
            f"invalid data.val_fraction={cfg.data.val_fraction}: of {n} training images it holds out none"
        )
    if n - n_val < 1:
        raise ConfigError(
            f"invalid data.val_fraction={cfg.data.val_fraction}: of {n} training images it leaves none to train on"
        )
    classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    if cfg.model.num_classes < classes:
        raise ConfigError(
            f"invalid model.num_classes={cfg.model.num_classes}: the data's labels need at least {classes}"
        )


def plan(overrides: Sequence[str], multirun: bool, verify_data: bool = True) -> list[Job]:
    """Compose and validate every job of the sweep (or the single run), then check the data files they read;
    raise ConfigError on the first bad value."""
    from initstudy.model import resolve_hidden_sizes  # imports torch: after the numerics profile is applied

    jobs: list[Job] = []
    data_checks: dict[Path, dict[str, str]] = {}
    configs: list[tuple[DictConfig, Path]] = []
    for job in job_overrides(overrides, multirun):
        cfg = compose_config(job, return_hydra_config=True)
        hydra_cfg = cfg.hydra
        sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
        run_dir = sweep_dir / hydra_cfg.sweep.subdir if sweep_dir else Path(hydra_cfg.run.dir)
        job_cfg = DictConfig({k: v for k, v in cfg.items() if k != "hydra"})
        validate(job_cfg)
        validate_download(job_cfg.download)
        raw_dir = repo_root() / job_cfg.data.root / "MNIST" / "raw"
        data_checks[raw_dir] = {str(k): str(v) for k, v in job_cfg.download.sha256.items()}
        configs.append((job_cfg, raw_dir))
        jobs.append(
            Job(tuple(job), job_cfg.init.name, job_cfg.seed, run_dir, config_hash(job_cfg), sweep_dir,
                run_identity(job_cfg), job_cfg.model.activation, tuple(resolve_hidden_sizes(
                    job_cfg.model.hidden_sizes, job_cfg.model.get("depth"), job_cfg.model.get("width"))))
        )  # fmt: skip
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.run_dir in seen:
            raise ConfigError(
                f"jobs {' '.join(seen[job.run_dir].overrides)!r} and {' '.join(job.overrides)!r} would share the "
                f"run folder {job.run_dir}; sweep only init and seed, or change hydra.sweep.subdir"
            )
        seen[job.run_dir] = job
    if verify_data:
        for raw_dir, expected in data_checks.items():
            check_data(raw_dir, expected)
        for job_cfg, raw_dir in configs:
            check_fits_data(job_cfg, raw_dir)
    return jobs


def write_manifest(jobs: Sequence[Job], sweep_dir: Path) -> Path:
    frame = pd.DataFrame(
        {
            "init": [job.init for job in jobs],
            "seed": [job.seed for job in jobs],
            "run_dir": [job.run_dir.relative_to(sweep_dir).as_posix() for job in jobs],
            "config_hash": [job.config_hash for job in jobs],
            "identity": [job.identity for job in jobs],
            "activation": [job.activation for job in jobs],
            "depth": [job.depth for job in jobs],
            "hidden_sizes": ["-".join(map(str, job.hidden_sizes)) for job in jobs],
            "overrides": [" ".join(job.overrides) for job in jobs],
        }
    )
    path = sweep_dir / MANIFEST_NAME
    atomic.write_text(path, frame.to_csv(index=False))
    return path


def read_manifest(sweep_dir: Path) -> pd.DataFrame:
    path = sweep_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage (dvc repro train) first")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable manifest: {' '.join(str(error).split())}") from None
    missing = {"init", "seed", "run_dir"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
    return frame
