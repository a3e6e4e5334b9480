"""The project's error types that every layer raises: a bad config value is a ``ConfigError`` (a
``ValueError``) whose message is one line naming the value and what is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message is one line."""
