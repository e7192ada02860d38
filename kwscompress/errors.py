"""Errors that are the user's to fix.

A :class:`KwsError` carries one sentence naming the file, key or name at fault and what would be
valid. The command line prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class KwsError(Exception):
    """A user mistake: a bad file, key, value or name."""


class ConfigError(KwsError):
    """A config file or value that cannot be used."""


class UnknownComponentError(KwsError):
    """A component name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        valid = ", ".join(self.known) or "none are registered"
        super().__init__(f"unknown {kind} {name!r}; valid names: {valid}")


class DataError(KwsError):
    """A dataset directory that cannot be used."""
