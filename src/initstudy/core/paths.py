"""Where the study lives: the one place that decides the root folder (holding params.yaml) that configs,
data and run folders are resolved against."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The study's root folder (holding params.yaml): $INITSTUDY_ROOT, else the working directory."""
    return Path(os.environ.get("INITSTUDY_ROOT", os.getcwd())).resolve()
