"""The project's error types that every layer raises: a bad config value is a ``ConfigError`` (a
``ValueError``) whose message is one line naming the value and what is allowed."""

from __future__ import annotations

import errno
import os

# A write that found no room: the disk, or the user's quota, is full.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message is one line."""


def no_space(error: BaseException, folder: object = None) -> str | None:
    """The one line for a write that found the disk (or the quota) full, naming the file (or else the
    ``folder`` being written); None for any other error. The project writes every file through a temporary
    file and a rename, so the file named is as it was before."""
    if not isinstance(error, OSError) or error.errno not in NO_SPACE:
        return None
    written = error.filename or folder
    where = f" writing {written}" if written else ""
    return (
        f"no space left on the device{where} ({os.strerror(error.errno)}); free space there or write "
        "elsewhere (hydra.run.dir / hydra.sweep.dir for training, --out for the diagnostics and the report)"
    )
