"""Errors a person can act on: each names the file, line or field and what was expected."""

from __future__ import annotations

__all__ = ["FusionrecError", "FormatError", "ConfigError"]


class FusionrecError(Exception):
    """A user's mistake: the CLI prints the message on one line and exits with code 2."""


class FormatError(FusionrecError):
    """A file is not what its format says (delimiter, columns, binary, empty)."""


class ConfigError(FusionrecError):
    """A configuration value or flag is invalid."""
