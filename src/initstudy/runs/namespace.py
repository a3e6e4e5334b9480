"""The study's namespace: which launch may replace which run folder, and which sweep owns a root's manifest.

The study's run folders (``runs/<init>/seed_<n>``, a preset's ``runs_<name>/...``) are what its report reads,
so a try on the command line must never replace them. The rules, checked by the pre-flight before anything
is written (:func:`claim`), each refusal one line that names the folder and the way to do it on purpose:

- **A folder is replaced only by a run of its own config or of the plan.** A folder holding a run of another
  config (its ``config.yaml``: :func:`initstudy.config.compose.config_hash`, so code and data versions may
  change) is replaced only by a launch that follows the plan: its command line picks runs (``init``,
  ``seed``, the keys the folder layout names, ``experiment``), how they run (``hydra/launcher=...``) and where
  they are logged (``logger``), nothing else. The plan's values live in params.yaml (edit it, rerun the
  study). Anything else is refused rather than sent elsewhere: a run lands where its layout says, and a try
  names its own folder (``hydra.run.dir=runs_try/...``, ``hydra.sweep.dir=runs_try``).
- **A root's manifest is rewritten only by the sweep that owns it**: the root's plan (no command-line value
  but ``experiment``), a rerun of the same run folders that follows the plan, or the first sweep of a root
  without a manifest. Any other sweep runs its jobs and leaves the manifest as it is.
- **Tuning sweeps write to a root of their own** (``runs_tune`` by default), never to a study's root.
- **An attempt starts in an empty staging folder of its own**: leftovers of earlier attempts are the
  contract's file names and are cleared; anything else is refused (:func:`initstudy.runs.rundir.check_staging`).
- **``init.name`` names the chosen option**: it names the run folder and the report's rows, so
  ``init=he_uniform init.name=zeros`` (a He run filed as zeros) is refused (:func:`check_init_choice`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig, OmegaConf

from initstudy.config.compose import config_hash
from initstudy.core.errors import ConfigError
from initstudy.runs import manifest, rundir
from initstudy.runs.clean import TRY_ROOTS, default_roots

log = logging.getLogger(__name__)

# Config keys outside a run's identity (initstudy.config.compose.config_hash leaves them out): where a run is
# logged, how the data are fetched, a speed knob.
OUTSIDE_IDENTITY = ("logger", "download", "data.steps_per_chunk")
# Presets pick a study of their own (their own root and plan).
PRESET_KEY = "experiment"
# Hydra settings that change how or where jobs run, not which jobs or their configs.
HYDRA_HOW = (
    "hydra/launcher",
    "hydra.launcher",
    "hydra/job_logging",
    "hydra.job_logging",
    "hydra/hydra_logging",
    "hydra.hydra_logging",
    "hydra.verbose",
    "hydra.sweep.dir",  # a root of its own: the layout below it is the plan's
    "hydra.mode",  # Hydra adds hydra.mode=RUN / MULTIRUN to every launch's overrides
)
TUNING_SUFFIX = "_tune"  # runs -> runs_tune: the default root of a tuning sweep
TRY_ROOT = TRY_ROOTS[1]  # the folder a refusal suggests for a try (make clean knows both)


class Planned(Protocol):
    """What the namespace needs of a job (initstudy.sweep.jobs.Job has it)."""

    overrides: tuple[str, ...]
    run_dir: Path
    config_hash: str


def override_key(text: str) -> str:
    """The key or group an override sets: ``+init.std=1`` -> ``init.std``, ``hydra/launcher=x`` as is."""
    return text.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") or key.startswith(f"{prefix}/")
               for prefix in prefixes)  # fmt: skip


def _given(overrides: object) -> list[str]:
    """``hydra.overrides.task`` / ``.hydra`` as given (unresolved, like initstudy.sweep.jobs.as_given)."""
    items = OmegaConf.to_container(overrides, resolve=False) if OmegaConf.is_config(overrides) else overrides
    return [str(item) for item in items or ()]  # type: ignore[union-attr]


@dataclass(frozen=True)
class Launch:
    """A launch's command line, as far as the namespace is concerned."""

    task: tuple[str, ...]  # hydra.overrides.task
    hydra: tuple[str, ...]  # hydra.overrides.hydra
    layout_keys: frozenset[str]  # keys that pick a run folder (init, seed, what the layout names)

    @classmethod
    def of(cls, config: DictConfig, layout_keys: Iterable[str]) -> Launch:
        overrides = config.hydra.overrides
        return cls(tuple(_given(overrides.task)), tuple(_given(overrides.hydra)), frozenset(layout_keys))

    def _hydra_changes_jobs(self) -> bool:
        return any(not _under(override_key(o), HYDRA_HOW) for o in self.hydra)

    def changed(self, allowed: Iterable[str]) -> list[str]:
        """The command-line overrides that set a config value other than the ``allowed`` keys and the keys
        outside the identity: what makes a launch's configs differ from the plan's."""
        allowed = set(allowed)  # exactly: init.std sets a value inside the chosen init option
        return [o for o in self.task
                if override_key(o) not in allowed and not _under(override_key(o), OUTSIDE_IDENTITY)]  # fmt: skip

    def follows_plan(self) -> bool:
        """Its runs have the plan's config: the command line only picks runs, how and where they run."""
        return not self.changed((*self.layout_keys, PRESET_KEY)) and not self._hydra_changes_jobs()

    def is_plan(self) -> bool:
        """The root's own sweep: params.yaml (or a preset) as it is, run by any launcher."""
        return not self.changed((PRESET_KEY,)) and not self._hydra_changes_jobs()


@dataclass
class Claim:
    """What the pre-flight found a launch may write: its staging folders (cleared of earlier attempts'
    leftovers once the lock is held) and whether it writes the sweep root's manifest."""

    stagings: list[Path] = field(default_factory=list)
    owns_manifest: bool = True

    def clear_leftovers(self) -> None:
        for staging in self.stagings:
            rundir.clear_staging(staging)


def _resolve(path: Path, root: Path) -> Path:
    return Path(os.path.realpath(path if path.is_absolute() else root / path))


def held_config_hash(folder: Path) -> str | None:
    """The config of the run a folder holds (its ``config.yaml``), or None when it holds no finished run
    (no marker, no readable config: nothing to protect, the run is recomputed)."""
    if rundir.read_marker(folder) is None:
        return None
    try:
        return config_hash(OmegaConf.create(OmegaConf.load(folder / "config.yaml")))
    except Exception:  # damaged: OmegaConf raises many kinds; the run is incomplete and recomputed
        return None


def check_replacement(final: Path, job: Planned, launch: Launch, root: Path, multirun: bool) -> None:
    """Refuse a job whose folder holds a finished run of another config unless the launch follows the plan."""
    held = held_config_hash(final)
    if held is None or held == job.config_hash or launch.follows_plan():
        return
    shown = rundir.display_path(final, root)
    own = (f"hydra.sweep.dir={TRY_ROOT}" if multirun
           else f"hydra.run.dir={TRY_ROOT}/{'/'.join(Path(shown).parts[-2:])}")  # fmt: skip
    changed = launch.changed((*launch.layout_keys, PRESET_KEY)) or [
        o for o in launch.hydra if not _under(override_key(o), HYDRA_HOW)
    ]
    raise rundir.RunFolderError(
        f"run folder {shown} holds a finished run of another config than this run's ({' '.join(changed)}); "
        f"give the try a folder of its own ({own}), or replace that run on purpose: set the values in "
        f"params.yaml and rerun the study (dvc repro), or delete {shown} first"
    )


def check_init_choice(cfg: DictConfig) -> None:
    """``init.name`` names the run folder and the report's rows: it must be the chosen ``init`` option's."""
    choices = cfg.get("hydra", {}).get("runtime", {}).get("choices", {})
    chosen, name = choices.get("init"), cfg.init.get("name")
    if chosen is not None and name != chosen:
        raise ConfigError(
            f"invalid init.name={name}: it names the run folder and must be the chosen initializer's "
            f"({chosen}, conf/init/{chosen}.yaml); choose the initializer with init={name} instead"
        )


def study_roots(root: Path) -> set[Path]:
    """The roots whose manifests the study's reports read: runs/ and every preset's."""
    return {_resolve(Path(name), root) for name in default_roots()}


def tuning_root(default: str, is_grid: bool) -> str:
    """``hydra.sweep.dir`` of the study's layout: ``default`` for a grid, ``<default>_tune`` for a tuner."""
    return default if is_grid else f"{default}{TUNING_SUFFIX}"


def claim(
    config: DictConfig,
    launch: Launch,
    jobs: Sequence[Planned] | None,
    root: Path,
    sweep_root: Path | None = None,
) -> Claim:
    """Every rule of the namespace for one launch, before anything is written: each job's folder may take
    its run, each staging folder holds nothing foreign; for a sweep, whether it owns the root's manifest. A
    single run: ``jobs`` holds it, ``sweep_root`` None. A tuning sweep: ``jobs`` None (checked per trial)."""
    if sweep_root is not None and jobs is None:
        if sweep_root in study_roots(root):
            shown = rundir.display_path(sweep_root, root)
            raise rundir.RunFolderError(
                f"a tuning sweep writes to a root of its own, not to the study's {shown}/ (its manifest is "
                f"what the report reads): add hydra.sweep.dir={Path(shown).name}{TUNING_SUFFIX}"
            )
        return Claim()
    assert jobs is not None
    sweep_dir = Path(config.hydra.sweep.dir) if sweep_root is not None else None
    placed = []
    for job in jobs:
        if sweep_root is not None and sweep_dir is not None:
            relative = job.run_dir.relative_to(sweep_dir)
            final = sweep_root / relative
            staging = Path(os.path.abspath(sweep_dir)) / rundir.STAGING / relative
        else:
            final = _resolve(job.run_dir, root)
            staging = rundir.staging_dir(Path(os.path.abspath(job.run_dir)))
        check_replacement(final, job, launch, root, multirun=sweep_root is not None)
        rundir.check_staging(staging, rundir.display_path(staging, root))
        placed.append((final, staging))
    result = Claim([staging for _, staging in placed])
    if sweep_root is not None:
        run_dirs = {final.relative_to(sweep_root).as_posix() for final, _ in placed}
        result.owns_manifest = owns_manifest(sweep_root, run_dirs, launch, root)
        if not result.owns_manifest:
            log.info("%s/%s is left as it is: this sweep is not the root's plan (params.yaml)",
                     rundir.display_path(sweep_root, root), manifest.MANIFEST_NAME)  # fmt: skip
    return result


def owns_manifest(sweep_root: Path, run_dirs: set[str], launch: Launch, root: Path) -> bool:
    """Whether a sweep of ``run_dirs`` (relative to the root) may rewrite the root's manifest. A plan sent to
    another study's root by name (``hydra.sweep.dir=runs_depth``) is not that root's plan."""
    listed = manifest.listed_run_dirs(sweep_root)
    named = any(override_key(o) == "hydra.sweep.dir" for o in launch.hydra)
    moved = named and sweep_root in study_roots(root)
    plan = launch.is_plan() and not moved
    return not listed or plan or (launch.follows_plan() and not moved and run_dirs == listed)
