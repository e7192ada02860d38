"""Errors that are the user's to fix.

A :class:`KwsError` carries one sentence naming the file, key or name at fault and what would be
valid. The command line prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class KwsError(Exception):
    """A user mistake: a bad file, key, value or name."""


class ConfigError(KwsError):
    """A config file or value that cannot be used."""


class UnknownComponentError(KwsError):
    """A component name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], broken: Iterable[str] = ()):
        self.kind, self.name, self.known = kind, name, sorted(known)
        valid = ", ".join(self.known) or "none are registered"
        message = f"unknown {kind} {name!r}; valid names: {valid}"
        broken = sorted(broken)
        if broken:
            message += f" (broken plugins, whose components are missing: {', '.join(broken)})"
        super().__init__(message)


class PluginError(KwsError):
    """A plugin's component raised: the message names the plugin and the component.

    The original exception is the ``__cause__``; the command line shows its traceback with
    ``--traceback`` (or ``KWSCOMPRESS_TRACEBACK=1``) and the run log always holds it.
    """

    def __init__(self, plugin: str, component: str | None, error: BaseException, where: str = ""):
        self.plugin, self.component = plugin, component
        self.log: Path | None = None
        """The run log holding the traceback, when a pipeline stage raised it."""
        self.error = f"{type(error).__name__}: {error}"
        subject = f"{component} of plugin {plugin!r}" if component else f"plugin {plugin!r}"
        super().__init__(f"{subject} failed{f' in {where}' if where else ''}: {self.error}")

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready record: ``plugin``, ``component``, ``message``."""
        return {"plugin": self.plugin, "component": self.component, "message": str(self)}


def component_failure(plugin: str, component: str, error: BaseException) -> dict[str, str]:
    """The ``error`` record a variant row, export or MCU record keeps when a component raised:
    ``plugin``, ``component`` (e.g. ``exporter 'tflite'``) and ``message``."""
    return {
        "plugin": plugin,
        "component": component,
        "message": f"{type(error).__name__}: {error}",
    }


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that it stops a run the way Ctrl-C does."""


class DataError(KwsError):
    """A dataset directory that cannot be used."""
