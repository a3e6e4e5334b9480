"""A sweep's jobs, and where each job lands, known before anything runs.

Training takes its jobs from Hydra: the sweeper makes them, the project's launchers check each batch as
Hydra composed it (:func:`initstudy.sweep.preflight.check_batch`: a bad value fails the batch before its first
run, not at run 17) and write the manifest: the list of run folders that make up *this* sweep, which is all
the report reads, so a stale folder from an older sweep can never leak into a result. What a job is and where
it lands (:func:`make_job`) is defined here for both. The diagnose stage, which runs no Hydra sweep, lists the
jobs of the study's grid itself (:func:`plan`, with :func:`grid`: the basic sweeper's documented semantics,
tested against the manifest a sweep writes).

Where a job lands is Hydra's ``hydra.sweep.dir``/``hydra.sweep.subdir`` (``hydra.run.dir`` for one run),
with two resolvers registered here: ``${initstudy.group:}`` (the readable level that keeps jobs which differ
in more than init and seed apart) and ``${initstudy.staging:}`` (where Hydra's own files of an attempt go).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from initstudy.config.compose import compose_config, config_hash
from initstudy.config.download import validate_download
from initstudy.config.numerics import (
    NumericsProfile,
    apply_shared,
    from_config,
)
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root
from initstudy.data.check import DataFacts, check_data, check_fits_data, data_facts
from initstudy.runs import namespace, rundir
from initstudy.runs.rundir import MANIFEST, run_identity

MANIFEST_NAME = MANIFEST
GROUP_RESOLVER = "initstudy.group"
STAGING_RESOLVER = "initstudy.staging"
# hydra.sweep.dir of the study's layout: runs for a grid, runs_tune for a tuner (initstudy.runs.namespace).
SWEEP_ROOT_RESOLVER = "initstudy.sweep_root"
SWEPT_KEYS_ENV = "INITSTUDY_SWEPT_KEYS"  # set by the launch for its jobs: the keys the sweep varies
# Characters kept as they are in a group name; anything else is percent-encoded (%2F for "/"), so that a
# value never adds a folder level, hides a folder (leading dot) or needs quoting in a shell.
NAME_SAFE = "=,.+-_:@[]"
NAME_MAX = 200  # bytes; file systems allow 255 per path component
INTERPOLATED_KEY = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


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
    group: str = ""  # the level above <init>/seed_<n> ('' for the default sweep)

    @property
    def depth(self) -> int:
        return len(self.hidden_sizes)


# ---- overrides and the grid ----------------------------------------------------------------------------


def parse(overrides: Sequence[str]) -> list[Override]:
    """Hydra's own parse of command-line overrides; a syntax error is a one-line ConfigError."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(" ".join(str(error).split())) from None


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(plain overrides, sweep overrides such as ``init=zeros,he_uniform``)."""
    parsed = parse(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweep = [o.input_line for o in parsed if o.is_sweep_override()]
    return plain, sweep


def grid(arguments: Sequence[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``arguments`` (its ``params`` first, then the command line):
    one value per key, the command line winning for a key given twice, every combination of the swept
    values in Hydra's order. The documented semantics of the grid, computed with Hydra's public parser, for
    the diagnose stage, which lists the study's jobs without running a sweep; training takes Hydra's own."""
    choices: dict[str, list[str]] = {}
    for override in parse(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(
                f"{override.input_line!r} is a range to tune, not a list to sweep; the grid sweeps lists "
                "(a,b,c, range(...), choice(...)); tune with a sweeper such as hydra/sweeper=tune"
            )
    return [list(job) for job in itertools.product(*choices.values())]


def sweeper_arguments(hydra_cfg: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` as overrides (``init: zeros,he_uniform`` -> ``init=zeros,he_uniform``)."""
    params = hydra_cfg.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()]


def is_grid(hydra_cfg: DictConfig) -> bool:
    """Whether the sweeper is Hydra's basic (grid) sweeper, whose jobs follow from the overrides alone."""
    return str(hydra_cfg.sweeper.get("_target_", "")).endswith(".BasicSweeper")


def job_overrides(overrides: Sequence[str], multirun: bool) -> list[list[str]]:
    """Every job's overrides: the sweeper's params merged with the command line (which wins), as Hydra does."""
    _, swept = split_overrides(overrides)
    if not multirun:
        if swept:
            raise ConfigError(f"{swept[0]!r} sweeps several values: add --multirun (-m)")
        return [list(overrides)]
    return grid(sweep_arguments(overrides))


def sweep_arguments(overrides: Sequence[str]) -> list[str]:
    """What the grid sweeper is given: params.yaml's ``hydra.sweeper.params``, then the command line."""
    plain, _ = split_overrides(overrides)
    return sweeper_arguments(compose_config(plain, return_hydra_config=True).hydra) + list(overrides)


# ---- where a job lands -----------------------------------------------------------------------------------


def safe_name(text: str) -> str:
    """``text`` as one folder name: unsafe characters percent-encoded, long names cut and given a digest."""
    name = quote(text, safe=NAME_SAFE)
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[: NAME_MAX - 14]}~{digest}"
    return name


def named_keys(layout: DictConfig) -> set[str]:
    """The config keys a layout node (``hydra.sweep`` or ``hydra.run``) names in its patterns, e.g.
    ``model.activation`` in ``${model.activation}/depth_${model.depth}/...``: they need no group level."""
    raw = OmegaConf.to_container(layout, resolve=False)
    texts = [value for value in raw.values() if isinstance(value, str)] if isinstance(raw, dict) else []
    return {match for text in texts for match in INTERPOLATED_KEY.findall(text)}


def layout_keys(hydra_cfg: DictConfig, layout: DictConfig) -> set[str]:
    """The keys that pick a run folder without a group level: ``override_dirname.exclude_keys`` (init,
    seed, experiment) and the keys the layout names."""
    return set(hydra_cfg.job.config.override_dirname.exclude_keys) | named_keys(layout)


def swept_keys(arguments: Sequence[str]) -> list[str]:
    """The keys a sweep varies: those whose last override among ``arguments`` (the sweeper's params, then the
    command line, which wins) is a sweep (``a,b``, ``range``, ``choice``, ``interval``, ``tag(...)``), for any
    sweeper."""
    last = {override.key_or_group: override.is_sweep_override() for override in parse(arguments)}
    return sorted(key for key, swept in last.items() if swept)


@contextlib.contextmanager
def sweeping(keys: Sequence[str]) -> Iterator[None]:
    """Name ``keys`` as the swept keys while jobs are composed here (outside a launch)."""
    before = os.environ.get(SWEPT_KEYS_ENV)
    os.environ[SWEPT_KEYS_ENV] = ",".join(keys)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SWEPT_KEYS_ENV, None)
        else:
            os.environ[SWEPT_KEYS_ENV] = before


def group_name(cfg: DictConfig, layout: DictConfig) -> str:
    """The readable level of a job: ``key=value`` of each key the sweep varies, sorted by key and joined by
    commas, leaving out ``hydra.job.config.override_dirname.exclude_keys`` (init, seed, experiment, where
    it is logged...) and the keys the layout already names; '' when none is left, so the default sweep
    (init x seed) keeps ``runs/<init>/seed_<n>``. Values as Hydra parsed them (``1e-3`` -> ``0.001``): the
    name depends neither on the order of the overrides nor on how a number is spelled.

    Only swept keys count (named by the launch in $INITSTUDY_SWEPT_KEYS, see :func:`swept_keys`): one sweep
    needs one folder per config at once. A value given once (``-m trainer.max_epochs=2``) is like an edit
    of params.yaml: the run keeps its folder, and the run identity (:func:`initstudy.runs.rundir.run_identity`)
    makes sure the folder is never taken for the old config. A folder holding a finished run of another
    config is replaced only by a launch that follows the plan (params.yaml), once the new run is complete;
    any other is refused by the pre-flight (:mod:`initstudy.runs.namespace`)."""
    swept = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    excluded = layout_keys(cfg.hydra, layout)
    parts: dict[str, str] = {}
    for override in parse(as_given(cfg.hydra.overrides.task)):
        key = override.key_or_group
        if key in swept and key not in excluded:
            parts[key] = f"~{key}" if override.is_delete() else f"{key}={value_text(override)}"
    return safe_name(",".join(parts[key] for key in sorted(parts))) if parts else ""


def value_text(override: Override) -> str:
    """An override's value as the config will hold it: a string without the quotes the shell needed."""
    value = override.value()
    return value if isinstance(value, str) else override.get_value_element_as_str()


def _group_resolver(*, _parent_: DictConfig, _root_: DictConfig) -> str:
    name = group_name(_root_, _parent_)
    return f"{name}/" if name else ""


def staging_for(hydra_cfg: DictConfig) -> Path:
    """Where an attempt of this job trains and Hydra writes its files (``.hydra/``, the log): the run
    folder's staging folder, moved into place only once complete (:mod:`initstudy.runs.rundir`)."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(os.path.abspath(hydra_cfg.sweep.dir)) / rundir.STAGING / str(hydra_cfg.sweep.subdir)
    return rundir.staging_dir(Path(os.path.abspath(hydra_cfg.run.dir)))


def _staging_resolver(*, _root_: DictConfig) -> str:
    return str(staging_for(_root_.hydra))


def _sweep_root_resolver(default: str, *, _root_: DictConfig) -> str:
    return namespace.tuning_root(default, is_grid(_root_.hydra))


def register_resolvers() -> None:
    """The resolvers, for every process that composes or runs a job (idempotent)."""
    OmegaConf.register_new_resolver(GROUP_RESOLVER, _group_resolver, replace=True)
    OmegaConf.register_new_resolver(STAGING_RESOLVER, _staging_resolver, replace=True)
    OmegaConf.register_new_resolver(SWEEP_ROOT_RESOLVER, _sweep_root_resolver, replace=True)


register_resolvers()


def as_given(overrides: ListConfig) -> list[str]:
    """``hydra.overrides.task`` or ``.hydra`` as the command line gave them. A value holding ``${...}`` is an
    interpolation to OmegaConf, which reading a list item resolves against the config at hand (in a callback,
    the primary config: every job would get its values); Hydra's loader reads them unresolved and resolves
    them in each job's own config, and so does the project."""
    return [str(item) for item in OmegaConf.to_container(overrides, resolve=False)]


def task_config(cfg: DictConfig) -> DictConfig:
    """A composed config without its ``hydra`` node: what the job's code sees."""
    return DictConfig({key: value for key, value in cfg.items() if key != "hydra"})


def validate_job(cfg: DictConfig) -> DictConfig:
    """Every value a job depends on (:func:`initstudy.config.validate`, the download section); the job's
    config without ``hydra``. Imports torch: apply the numerics profile first."""
    job_cfg = task_config(cfg)
    validate(job_cfg)
    validate_download(job_cfg.download)
    return job_cfg


def make_job(cfg: DictConfig, overrides: Sequence[str], multirun: bool) -> Job:
    """Validate one composed job (with its ``hydra`` node) and say where it lands; ConfigError if bad."""
    from initstudy.nn.model import (
        resolve_hidden_sizes,  # imports torch: after the numerics profile is applied
    )

    hydra_cfg = cfg.hydra
    namespace.check_init_choice(cfg)
    job_cfg = validate_job(cfg)
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    run_dir = sweep_dir / hydra_cfg.sweep.subdir if sweep_dir else Path(hydra_cfg.run.dir)
    group = group_name(cfg, hydra_cfg.sweep if multirun else hydra_cfg.run)
    hidden = resolve_hidden_sizes(
        job_cfg.model.hidden_sizes, job_cfg.model.get("depth"), job_cfg.model.get("width")
    )
    return Job(tuple(overrides), job_cfg.init.name, job_cfg.seed, run_dir, config_hash(job_cfg), sweep_dir,
               run_identity(job_cfg), job_cfg.model.activation, tuple(hidden), group)  # fmt: skip


def check_distinct(jobs: Sequence[Job]) -> None:
    """No two jobs of one sweep may share a run folder (they would overwrite each other's results)."""
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.run_dir in seen:
            raise ConfigError(
                f"jobs {' '.join(seen[job.run_dir].overrides)!r} and {' '.join(job.overrides)!r} would share the "
                f"run folder {job.run_dir}; name the differing key in hydra.sweep.subdir, or take it out of "
                "hydra.job.config.override_dirname.exclude_keys"
            )
        seen[job.run_dir] = job


def raw_dir_of(job_cfg: DictConfig) -> Path:
    return repo_root() / job_cfg.data.root / "MNIST" / "raw"


def check_data_files(configs: Sequence[DictConfig]) -> None:
    """The data files every job reads are present and verified, and every job's sizes fit them."""
    facts: dict[Path, DataFacts] = {}
    for cfg in configs:
        job_cfg = task_config(cfg)
        raw_dir = raw_dir_of(job_cfg)
        if raw_dir not in facts:
            check_data(raw_dir, {str(k): str(v) for k, v in job_cfg.download.sha256.items()})
            facts[raw_dir] = data_facts(raw_dir)
    for cfg in configs:
        job_cfg = task_config(cfg)
        check_fits_data(job_cfg, facts[raw_dir_of(job_cfg)])


def plan(overrides: Sequence[str], multirun: bool, verify_data: bool = True) -> list[Job]:
    """Compose and validate every job of the sweep (or the single run), then check the data files they read;
    raise ConfigError on the first bad value. For callers that start from overrides (diagnostics, tests);
    training plans from the config Hydra composed (:mod:`initstudy.sweep.preflight`)."""
    return [job for job, _ in plan_configs(overrides, multirun, verify_data)]


def plan_configs(
    overrides: Sequence[str], multirun: bool, verify_data: bool = True
) -> list[tuple[Job, DictConfig]]:
    """:func:`plan`, each job with its composed config (``hydra`` node included), for a caller that needs
    both: composing a job costs ~0.3 s here, so it is done once."""
    arguments = sweep_arguments(overrides) if multirun else []
    lists = grid(arguments) if multirun else job_overrides(overrides, multirun=False)
    with sweeping(swept_keys(arguments)):
        configs = [compose_config(job, return_hydra_config=True) for job in lists]
        jobs = [make_job(cfg, job, multirun) for cfg, job in zip(configs, lists, strict=True)]
    check_distinct(jobs)
    if verify_data:
        check_data_files(configs)
    return list(zip(jobs, configs, strict=True))


def apply_for_sweep(overrides: Sequence[str], multirun: bool) -> NumericsProfile:
    """``numerics.apply_shared`` for the jobs an entry point's overrides make (composed without torch): the
    environment is process-wide, so every job of a sweep must share its import-time part."""
    from initstudy.config.compose import compose_config
    from initstudy.sweep.jobs import job_overrides

    jobs = job_overrides(overrides, multirun)
    variants = {tuple(o for o in job if o.lstrip("+~").startswith("numerics")): job for job in jobs}
    return apply_shared([from_config(compose_config(job).numerics) for job in variants.values()])
