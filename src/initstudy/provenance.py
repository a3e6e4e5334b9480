"""Which software produced a result: exact versions of the packages that decide it, and the lock's digest.

Read from installed metadata (``importlib.metadata``), so nothing here imports torch & co. A run records both
next to its git commit: the versions say what ran, the digest says whether it was the locked environment
(``requirements.lock``, see the README's "Pinned environment").
"""

from __future__ import annotations

import hashlib
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
# src/initstudy/provenance.py -> the checkout `make install` installed this package from (editable).
CHECKOUT = Path(__file__).resolve().parents[2]


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
