"""``python -m initstudy.runs.clean [SWEEP_ROOT ...]``: delete the project's run folders (``make clean``).

Only what the run-folder contract names is deleted (initstudy.runs.rundir.remove_sweep_root): a file the project
did not write stays, with its folders, and is listed. The MLflow store (mlflow.db, mlartifacts/) is kept: it
holds the history of every run, and deleting it is a decision of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from initstudy.core import locking
from initstudy.core.paths import repo_root
from initstudy.runs import rundir


def default_roots() -> list[str]:
    """The default sweep's folder and every experiment preset's (conf/experiment/*.yaml: hydra.sweep.dir), so
    that a new preset's runs are cleaned without a list to keep in step."""
    roots = ["runs"]
    for preset in sorted((repo_root() / "conf" / "experiment").glob("*.yaml")):
        folder = ((yaml.safe_load(preset.read_text()) or {}).get("hydra", {}).get("sweep", {})).get("dir")
        if isinstance(folder, str) and "${" not in folder and folder not in roots:
            roots.append(folder)
    return roots


# Roots of tries, not of the study: a tuning sweep's (initstudy.runs.namespace), the one refusals suggest, and
# the debug group's (conf/debug/).
TRY_ROOTS = ("runs_tune", "runs_try", "runs_debug")


def main(argv: Sequence[str] | None = None) -> None:
    roots = list(sys.argv[1:] if argv is None else argv) or [*default_roots(), *TRY_ROOTS]
    kept: list[Path] = []
    for name in roots:
        root = rundir.check_destination(Path(name), repo_root(), what="sweep folder")
        if not root.exists():
            continue
        stamped = (root / rundir.SWEEP_STAMP).is_file()
        with locking.exclusive(root / rundir.LOCK_NAME, "training runs"):  # not while a sweep writes there
            kept += rundir.remove_sweep_root(root)
        if stamped:  # the lock is the project's own file: it goes too, and is not "kept"
            (root / rundir.LOCK_NAME).unlink(missing_ok=True)
            kept = [path for path in kept if path != root / rundir.LOCK_NAME]
            rundir.prune_empty(root, root.parent)
        print(f"cleaned {name}/")
    for path in kept:
        print(f"kept (not written by initstudy): {rundir.display_path(path, repo_root())}")


if __name__ == "__main__":
    try:
        main()
    except (rundir.RunFolderError, locking.LockHeld) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
