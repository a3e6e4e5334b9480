"""The run-folder contract: which folders a run may write, which files it owns, and when a run is complete.

Every command that touches run folders goes through this module: training (staging, promotion, resume),
the report and ``mlflow_import`` (reading and accepting runs). The rules, in one place:

- **Ownership.** A destination must be new, empty, or already the project's own (it holds the project's
  stamp or only Hydra's job files). The repo root, its ancestors and the project's own source, config, data
  and report folders are refused, symlinks resolved first. Deletion names the files this contract owns
  (:data:`OWNED_FILES`, Hydra's job files, our temporary files); nothing else is ever removed.
- **Staging.** An attempt trains into ``<parent>/.staging/<name>`` and is swapped into place only once its
  results and marker are written (an atomic exchange of the two folders where the OS offers one), so a
  finished run survives any failure or kill of its replacement.
- **Completeness.** A run is complete when its marker records the same :func:`run_identity` (resolved
  config, training code, data files, numerics) and its result files exist. Resume, the report and the import
  all decide with :func:`is_complete`; a damaged marker means "recompute", never a crash.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from initstudy.config.compose import config_hash
from initstudy.core import atomic
from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root
from initstudy.nn.weights import WEIGHT_FILES

log = logging.getLogger(__name__)

MARKER = ".complete"
STAMP = ".initstudy-run"  # written first into every run folder the project creates: proof of ownership
SWEEP_STAMP = ".initstudy-runs"  # written into every sweep root the project creates
STAGING = ".staging"
LOCK_NAME = ".initstudy.lock"
MANIFEST = "manifest.csv"
# Every test image's true class (row 0) and predicted class after training (row 1), in the test set's order
# (numpy uint8, [2, 10000]: 20 KB): the report pairs runs image by image and resamples the test images
# (initstudy.report.image_bootstrap) from the run folders alone.
PREDICTIONS = "test_predictions.npy"
# The weights at step 0 and after training (initstudy.nn.weights writes them).
RESULT_FILES = ("metrics.json", "history.csv", "config.yaml", PREDICTIONS, *WEIGHT_FILES)
LAYER_STATS = "layer_stats.csv"  # a result too, written only when module.layer_stats_every_n_steps is set
OWNED_FILES = (
    *RESULT_FILES,
    LAYER_STATS,
    "timing.json",
    "numerics.json",
    "provenance.json",
    MARKER,
    STAMP,
    "train.log",
)
# Lightning checkpoints of a run that asks for them (+callbacks=checkpoint): ``checkpoints/*.ckpt``, owned with
# the run (written in the staging folder, promoted with it, deleted with it); not a result (is_complete).
CHECKPOINTS = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
# Hydra writes these into a job's output folder before the job runs.
HYDRA_SUBDIR = ".hydra"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
# What a sweep root may hold besides run folders (and the folders leading to them).
TUNING_RESULTS = "optimization_results.yaml"  # what the Optuna sweeper writes into the sweep root
SWEEP_OWNED_FILES = (SWEEP_STAMP, MANIFEST, "multirun.yaml", LOCK_NAME, TUNING_RESULTS)
SWEEP_OWNED_DIRS = (STAGING, ".submitit")
# Folders of the project itself that no run may use, relative to the repo root.
PROTECTED = (".git", ".dvc", ".venv", "src", "conf", "tests", "data", "reports", "benchmarks", "docs")
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # atomic.write_text's temporary files

# The stage whose code dependencies (dvc.yaml) are a run's code identity: one list for DVC and for resume.
PIPELINE = "dvc.yaml"
TRAINING_STAGE = "train"
SOURCE_DIR = "src/"
# The project's code under src/: this package, and its Hydra plugins (the stacked launcher trains runs too).
CODE_PREFIXES = ("src/initstudy/", "src/hydra_plugins/initstudy_")


class RunFolderError(ConfigError):
    """A destination the project may not write, or a run folder it cannot trust; the message is one line."""


# ---- identity ------------------------------------------------------------------------------------------


def training_code(root: Path) -> list[str]:
    """The project's source files the train stage depends on, as DVC reads them from dvc.yaml (paths under
    src/): DVC's own parser (its schema, anchors and ``${...}`` templating), not a second reading of the file.
    DVC is imported here, not at the top: it costs a training process a few tenths of a second, once
    (:func:`_fingerprint` caches the answer), and the modules that only read run folders never pay it."""
    from dvc.dvcfile import load_file
    from dvc.exceptions import DvcException
    from dvc.fs import LocalFileSystem
    from dvc.repo import Repo

    path = root / PIPELINE
    try:
        # The stage's definition only (dvc.yaml resolved): Repo.stage.load_one would also parse dvc.lock,
        # which is three times as long and which a running `dvc repro` rewrites.
        # A folder without git or without .dvc/ (a bare copy of the study) trains too: DVC reads its
        # dvc.yaml as it reads a file outside any repository (uninitialized), and never asks git.
        with Repo(
            str(root), fs=LocalFileSystem(), uninitialized=True, config={"core": {"no_scm": True}}
        ) as repo:
            stage = load_file(repo, str(path)).resolver.resolve_one(TRAINING_STAGE)[TRAINING_STAGE]
    except DvcException as error:
        first_line = next(
            (line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__
        )
        raise RunFolderError(
            f"{path} names no `{TRAINING_STAGE}` stage that DVC can read ({first_line}): run from the study's root"
        ) from None
    deps = [dep for dep in stage.get("deps", []) if isinstance(dep, str) and dep.startswith(CODE_PREFIXES)]
    if not deps:
        raise RunFolderError(
            f"{path}: the `{TRAINING_STAGE}` stage lists no {CODE_PREFIXES[0]} file in its deps"
        )
    return sorted(name for dep in deps for name in _source_files(dep.removeprefix(SOURCE_DIR)))


def _source_files(name: str) -> list[str]:
    """A dep's Python files, as paths under src/: the file itself, or every ``.py`` file of a package folder
    (dvc.yaml names a folder where the stage runs all of it; DVC hashes the folder, the identity its files).
    Folders are read from the installed source, the code that runs."""
    folder = _source_root() / name
    if not folder.is_dir():
        return [name]
    return [
        path.relative_to(_source_root()).as_posix()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
    ]


def _source_root() -> Path:
    """The folder holding this package and its Hydra plugins (src/ in a checkout or an editable install)."""
    return Path(__file__).resolve().parents[2]


def code_fingerprint() -> str:
    """SHA-256 over the training code that runs (this package's files and its launcher plugin), as listed by
    dvc.yaml's train stage: editing one of them changes every run's identity; editing the report, the docs or
    a test does not."""
    return _fingerprint(repo_root())


@functools.cache
def _fingerprint(root: Path) -> str:
    """Once per process and repo: a sweep asks for it once per job, and the code that runs cannot change.
    The files hashed are the installed ones (the code that runs), found next to this package."""
    digest = hashlib.sha256()
    for name in training_code(root):
        path = _source_root() / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def identity_record(cfg: DictConfig) -> dict[str, Any]:
    """Everything that changes a run's numbers: the resolved config (its numerics profile included: it pins
    the CPU code paths and thread count), the training code, and the SHA-256 of the data files, which the
    pre-flight has verified against ``download.sha256`` before any job starts."""
    return {
        "config_hash": config_hash(cfg),
        "code_fingerprint": code_fingerprint(),
        "data_sha256": {str(k): str(v).lower() for k, v in sorted(cfg.download.sha256.items())},
    }


def run_identity(cfg: DictConfig) -> str:
    """One digest of :func:`identity_record`: equal in the pre-flight (manifest) and in the job (marker)."""
    return hashlib.sha256(json.dumps(identity_record(cfg), sort_keys=True).encode()).hexdigest()


# ---- reading -------------------------------------------------------------------------------------------


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    """The marker's content, or None when it is missing or damaged (not JSON, not a mapping)."""
    try:
        content = json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return content if isinstance(content, dict) else None


def is_complete(run_dir: Path, identity: str) -> bool:
    """The one rule for "this folder holds the finished run of this identity" (resume, report, import)."""
    marker = read_marker(run_dir)
    if marker is None or marker.get("identity") != identity:
        return False
    return all((run_dir / name).is_file() for name in RESULT_FILES)


def read_json(path: Path) -> dict[str, Any]:
    """A project JSON file as a mapping; a one-line :class:`RunFolderError` naming the file otherwise."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict):
        raise RunFolderError(f"{path} is not a JSON mapping")
    return content


# ---- ownership -----------------------------------------------------------------------------------------


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_destination(path: Path, root: Path, what: str = "run folder") -> Path:
    """The resolved ``path``; refuse the repo root, its ancestors and the project's own folders."""
    resolved = Path(os.path.realpath(path if path.is_absolute() else root / path))
    root = Path(os.path.realpath(root))
    if _is_within(root, resolved):
        raise RunFolderError(
            f"{what} {path} is {'the repo root' if resolved == root else 'an ancestor of the repo root'} "
            f"({resolved}); choose a new folder such as runs/<name>"
        )
    for name in PROTECTED:
        protected = root / name
        if _is_within(resolved, protected):
            raise RunFolderError(
                f"{what} {path} lies in the project's own folder {name}/ ({resolved}); choose a new folder "
                "such as runs/<name>"
            )
    _check_writable(resolved, path, what)
    return resolved


def _check_writable(resolved: Path, path: Path, what: str) -> None:
    """Probe the nearest existing folder with a folder that is removed at once (permissions, read-only
    mounts and pseudo-filesystems all answer a real attempt, not always ``os.access``)."""
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise RunFolderError(f"{what} {path} cannot be created: {existing} is not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".initstudy-probe-", dir=existing)
    except OSError as error:
        raise RunFolderError(
            f"{what} {path} is not writable ({existing}: {error.strerror}); choose a writable folder"
        ) from None
    os.rmdir(probe)


def _foreign_checkpoints(folder: Path) -> list[str]:
    """What a run's ``checkpoints/`` holds besides Lightning checkpoint files (``*.ckpt``)."""
    return [
        f"{CHECKPOINTS}/{child.name}"
        for child in sorted(folder.iterdir())
        if child.suffix != CHECKPOINT_SUFFIX or child.is_symlink() or not child.is_file()
    ]


def _remove_checkpoints(folder: Path) -> None:
    checkpoints = folder / CHECKPOINTS
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        for child in checkpoints.iterdir():
            if child.suffix == CHECKPOINT_SUFFIX and child.is_file() and not child.is_symlink():
                child.unlink(missing_ok=True)
        _rmdir_if_empty(checkpoints)


def _only_contract_files(entries: list[Path]) -> bool:
    """Only files this contract names (Hydra's job files included): a run folder the project wrote before
    stamps existed, or a job killed before its stamp was written."""
    for entry in entries:
        if entry.is_symlink():
            return False
        if entry.name == HYDRA_SUBDIR and entry.is_dir():
            if any(child.name not in HYDRA_FILES or not child.is_file() for child in entry.iterdir()):
                return False
        elif entry.name == CHECKPOINTS and entry.is_dir():
            if _foreign_checkpoints(entry):
                return False
        elif not entry.is_file() or not (entry.name in OWNED_FILES or TEMPORARY.match(entry.name)):
            return False
    return True


def is_project_run_folder(folder: Path) -> bool:
    entries = list(folder.iterdir())
    return (folder / STAMP).is_file() or (bool(entries) and _only_contract_files(entries))


def check_run_folder(path: Path, root: Path) -> Path:
    """A run folder must be new, empty, or the project's own; returns it resolved."""
    resolved = check_destination(path, root)
    if resolved.exists() and not resolved.is_dir():
        raise RunFolderError(f"run folder {path} exists and is not a folder")
    entries = list(resolved.iterdir()) if resolved.is_dir() else []
    if entries and not is_project_run_folder(resolved):
        foreign = sorted(e.name for e in entries if e.name not in (*OWNED_FILES, HYDRA_SUBDIR, CHECKPOINTS))
        raise RunFolderError(
            f"run folder {path} holds files the project did not write ({', '.join(foreign[:3]) or 'no stamp'}"
            f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder"
        )
    return resolved


def _foreign_in_tree(folder: Path) -> Path | None:
    """The first path under ``folder`` the project did not write: every folder below a sweep root is a run
    folder (stamped, or holding only Hydra's job files) or leads to run folders."""
    if is_project_run_folder(folder):
        return None
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            return entry
        found = _foreign_in_tree(entry)
        if found is not None:
            return found
    return None


def check_sweep_root(path: Path, root: Path) -> Path:
    """A sweep root must be new, empty, or hold only what the project writes there (manifest, stamp, lock,
    Hydra's multirun.yaml, staging and launcher folders, run folders); returns it resolved."""
    resolved = check_destination(path, root, what="sweep folder")
    if resolved.exists() and not resolved.is_dir():
        raise RunFolderError(f"sweep folder {path} exists and is not a folder")
    for entry in sorted(resolved.iterdir()) if resolved.is_dir() else ():
        if entry.name in SWEEP_OWNED_FILES or TEMPORARY.match(entry.name):
            continue
        if entry.name in SWEEP_OWNED_DIRS and entry.is_dir() and not entry.is_symlink():
            continue
        foreign = entry if entry.is_symlink() or not entry.is_dir() else _foreign_in_tree(entry)
        if foreign is not None:
            raise RunFolderError(
                f"sweep folder {path} holds {foreign.relative_to(resolved)}, which the project did not write; "
                "move it out or choose a new folder"
            )
    return resolved


def stamp_sweep_root(sweep_root: Path) -> None:
    sweep_root.mkdir(parents=True, exist_ok=True)
    if not (sweep_root / SWEEP_STAMP).is_file():
        atomic.write_json(sweep_root / SWEEP_STAMP, {"written_by": "initstudy", "kind": "sweep root"})


def remove_sweep_root(sweep_root: Path) -> list[Path]:
    """Delete the project's run folders under ``sweep_root`` (the files their contract names, nothing else),
    the sweep root's own files when it is stamped as ours, and the folders that this leaves empty. Returns
    what stayed: paths the project did not write, never deleted."""
    if not sweep_root.is_dir() or sweep_root.is_symlink():
        return []
    for folder, _, _ in os.walk(sweep_root, topdown=False):  # deepest first; os.walk does not follow links
        path = Path(folder)
        if path != sweep_root and is_project_run_folder(path):
            remove_owned(path)
        elif path != sweep_root:
            _rmdir_if_empty(path)
    if (sweep_root / SWEEP_STAMP).is_file():
        for name in SWEEP_OWNED_FILES:
            if name != LOCK_NAME:  # a running sweep holds it; an idle one leaves an empty file
                (sweep_root / name).unlink(missing_ok=True)
    _rmdir_if_empty(sweep_root)
    return sorted(sweep_root.rglob("*")) if sweep_root.exists() else []


# ---- staging and promotion -------------------------------------------------------------------------------


def staging_dir(final: Path) -> Path:
    """Where an attempt at ``final`` trains (single runs; a sweep stages under ``<sweep root>/.staging``)."""
    return final.parent / STAGING / final.name


def remove_owned(folder: Path) -> bool:
    """Delete the files this contract names (and our temporary files) from ``folder``, then the folder if it
    is empty. Returns whether the folder is gone; anything foreign stays where it is."""
    if not folder.is_dir() or folder.is_symlink():
        return not folder.exists()
    hydra = folder / HYDRA_SUBDIR
    for name in HYDRA_FILES:
        (hydra / name).unlink(missing_ok=True)
    _rmdir_if_empty(hydra)
    _remove_checkpoints(folder)
    for entry in folder.iterdir():
        if (entry.name in OWNED_FILES or TEMPORARY.match(entry.name)) and entry.is_file():
            entry.unlink(missing_ok=True)
    return _rmdir_if_empty(folder)


def _rmdir_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            return False
        raise
    return True


def prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while they are empty."""
    folder, stop = folder.resolve(), stop.resolve()
    while folder != stop and stop in folder.parents and _rmdir_if_empty(folder):
        folder = folder.parent


def foreign_entries(folder: Path) -> list[str]:
    """What ``folder`` (an attempt's staging folder) holds that the contract does not name: anything but the
    files of :data:`OWNED_FILES`, our temporary files and Hydra's job files in ``.hydra/``. A folder is
    shown with a trailing ``/``; links count as foreign whatever their name."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.name == HYDRA_SUBDIR and entry.is_dir() and not entry.is_symlink():
            foreign += [
                f"{HYDRA_SUBDIR}/{child.name}"
                for child in sorted(entry.iterdir())
                if child.name not in HYDRA_FILES or child.is_symlink() or not child.is_file()
            ]
        elif entry.name == CHECKPOINTS and entry.is_dir() and not entry.is_symlink():
            foreign += _foreign_checkpoints(entry)
        elif entry.is_symlink() or not entry.is_file():
            foreign.append(f"{entry.name}/" if entry.is_dir() and not entry.is_symlink() else entry.name)
        elif not (entry.name in OWNED_FILES or TEMPORARY.match(entry.name)):
            foreign.append(entry.name)
    return foreign


def check_staging(staging: Path, shown: str | None = None) -> None:
    """An attempt starts in an empty staging folder of its own: one that holds anything the contract does not
    name (a note, a folder, an extra ``.hydra/*.yaml``) is refused, every file left as it is. Leftovers of
    earlier attempts (the contract's own names) are fine: :func:`clear_staging` removes them."""
    shown = shown or str(staging)
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise RunFolderError(
            f"staging folder {shown} is not a folder of the project (a link or a file); move it out"
        )
    foreign = foreign_entries(staging) if staging.is_dir() else []
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunFolderError(
            f"staging folder {shown} holds {', '.join(foreign[:3])}{more}, which the project did not write; "
            "move it out (an attempt starts in an empty staging folder and promotes only its own files)"
        )


def clear_staging(staging: Path) -> None:
    """Remove the leftovers of earlier attempts from ``staging``: the files the contract names, nothing else
    (:func:`check_staging` has refused anything else)."""
    remove_owned(staging)


def begin_attempt(staging: Path) -> None:
    """Make ``staging`` a fresh, stamped attempt: leftovers of a killed attempt (ours only) removed first,
    anything the project did not write refused (the pre-flight refused it already; this holds for an
    attempt whose staging folder changed since)."""
    check_staging(staging)
    if staging.exists():
        for name in OWNED_FILES:
            if name != "train.log":  # Hydra's log of this very attempt is already open
                (staging / name).unlink(missing_ok=True)
        _remove_checkpoints(staging)
        for entry in staging.iterdir():
            if TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    atomic.write_json(staging / STAMP, {"written_by": "initstudy", "kind": "run folder"})


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def promote(staging: Path, final: Path) -> None:
    """Put the finished attempt in ``staging`` at ``final``; the run it replaces is removed only after.

    With an atomic exchange a kill at any moment leaves the old complete run or the new one at ``final``.
    Without one, the old run is first renamed aside; :func:`recover` puts it back after a kill in between.
    A staging folder that holds a file the attempt did not write is refused (:func:`check_staging`).
    """
    check_staging(staging)  # only the attempt's own files are promoted
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(staging, final)
    elif _exchange(staging, final):
        remove_owned(staging)  # now the replaced run
    else:
        aside = final.parent / STAGING / f"{final.name}.replaced"
        aside.parent.mkdir(parents=True, exist_ok=True)
        remove_owned(aside)
        os.rename(final, aside)
        os.rename(staging, final)
        remove_owned(aside)
    prune_empty(staging.parent, final.parent)


def recover(final: Path) -> None:
    """After a kill between the two renames of the fallback promotion: put the replaced run back."""
    aside = final.parent / STAGING / f"{final.name}.replaced"
    if not final.exists() and aside.is_dir():
        os.rename(aside, final)
        log.warning("restored %s from an interrupted replacement", final)


def write_marker(run_dir: Path, identity: str, **extra: Any) -> None:
    atomic.write_json(run_dir / MARKER, {"identity": identity, **extra})


def prune_tree(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (and ``folder`` itself when it ends up empty); no file."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        _rmdir_if_empty(path)
    _rmdir_if_empty(folder)


def lock_dir_for(run_dir: Path, root: Path) -> Path:
    """The folder whose lock a single run takes: the sweep root it lies in (so that a sweep and a single run
    on the same runs root exclude each other), else its top folder under the repo, else its parent."""
    for ancestor in run_dir.parents:
        if (ancestor / SWEEP_STAMP).is_file() or (ancestor / MANIFEST).is_file():
            return ancestor
    root = Path(os.path.realpath(root))
    try:
        parts = run_dir.relative_to(root).parts
    except ValueError:
        return run_dir.parent
    return root / parts[0] if len(parts) > 1 else run_dir.parent


def display_path(path: Path, root: Path) -> str:
    """A run folder as the user names it: relative to the repo root when inside it, else absolute."""
    resolved = Path(os.path.realpath(path))
    try:
        return resolved.relative_to(Path(os.path.realpath(root))).as_posix()
    except ValueError:
        return str(resolved)
