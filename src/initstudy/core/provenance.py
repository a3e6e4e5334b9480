"""Which software produced a result: exact versions of the packages that decide it, and the lock's digest.

Read from installed metadata (``importlib.metadata``), so nothing here imports torch & co. A run records both
next to its git commit: the versions say what ran, the digest says whether it was the locked environment
(``requirements.lock``, see the README, "Two commands").
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

# The distributions whose version can change a number in reports/: numerics, training, configuration,
# tracking, pipeline, statistics and figures.
RESULT_PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "numpy",
    "hydra-core",
    "omegaconf",
    "mlflow",
    "dvc",
    "pandas",
    "scipy",
    "matplotlib",
)
LOCK_FILE = "requirements.lock"
# src/initstudy/core/provenance.py -> the checkout `make install` installed this package from (editable).
CHECKOUT = Path(__file__).resolve().parents[3]


def package_versions() -> dict[str, str]:
    """Installed version of each of ``RESULT_PACKAGES``, e.g. ``{"torch": "2.14.1", ...}``;
    ``"not installed"`` for one that is missing."""
    versions = {}
    for name in RESULT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lock_digest(root: Path | None = None) -> str | None:
    """SHA-256 (hex) of ``requirements.lock`` in ``root``, by default the checkout this code runs from;
    None where there is none (e.g. a non-editable install into site-packages)."""
    path = Path(root or CHECKOUT) / LOCK_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def git_state(root: Path) -> dict[str, str]:
    """Commit and dirtiness of the work tree, for provenance tags ('unknown' outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }
