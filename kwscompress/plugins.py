"""The plugin manager: built-in and third-party plugins, loaded the same way.

Every plugin, built-in or not, is a module named in the ``kwscompress`` entry point group.
Two environment variables help debugging, as in datasette:

``KWSCOMPRESS_LOAD_PLUGINS``
    Comma-separated entry point names of the third-party plugins to load; empty loads none.
    Built-in plugins (those shipped in the ``kwscompress`` distribution) always load.
``KWSCOMPRESS_TRACE_PLUGINS``
    When set, every hook call is printed to standard error with its arguments and results.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from kwscompress import hookspecs
from kwscompress.errors import KwsError, UnknownComponentError

ENTRY_POINT_GROUP = "kwscompress"
BUILTIN_DISTRIBUTION = "kwscompress"

COMPONENT_HOOKS = {
    "dataset": "kws_register_datasets",
    "feature_extractor": "kws_register_feature_extractors",
    "model": "kws_register_models",
    "estimator": "kws_register_estimators",
    "quantizer": "kws_register_quantizers",
    "pruner": "kws_register_pruners",
    "backend": "kws_register_backends",
    "report_section": "kws_register_report_sections",
}
"""Component kind -> the registration hook that returns components of that kind."""


@dataclass(frozen=True)
class RegisteredComponent:
    """A component with where it came from."""

    kind: str
    name: str
    component: Any
    plugin: str
    version: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready row for ``kwscompress plugins --json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "version": self.version,
            "description": getattr(self.component, "description", ""),
        }


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with component lookup by kind and name."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self._versions: dict[str, str] = {}

    def load_entry_points(self) -> None:
        """Register every plugin of the entry point group, honouring KWSCOMPRESS_LOAD_PLUGINS."""
        allowed = os.environ.get("KWSCOMPRESS_LOAD_PLUGINS")
        allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",")}
        for dist in importlib.metadata.distributions():
            for entry_point in dist.entry_points:
                if entry_point.group != ENTRY_POINT_GROUP:
                    continue
                builtin = dist.metadata["Name"] == BUILTIN_DISTRIBUTION
                if (
                    not builtin
                    and allowed_names is not None
                    and (entry_point.name not in allowed_names)
                ):
                    continue
                if self.get_plugin(entry_point.name) is not None:
                    continue
                try:
                    plugin = entry_point.load()
                except Exception as exc:  # a broken third-party plugin must not hide the rest
                    raise KwsError(
                        f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}"
                    ) from exc
                self.register(plugin, name=entry_point.name)
                self._versions[entry_point.name] = dist.version

    def version_of(self, plugin_name: str) -> str:
        """The distribution version of an entry-point plugin, or ``unknown`` for ad-hoc ones."""
        return self._versions.get(plugin_name, "unknown")

    def components(self, kind: str) -> dict[str, RegisteredComponent]:
        """Every registered component of ``kind``, by name."""
        hook_name = COMPONENT_HOOKS[kind]
        found: dict[str, RegisteredComponent] = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            for component in self._call_one(hook_name, impl.plugin) or []:
                name = component.name
                if name in found:
                    raise KwsError(
                        f"{kind} {name!r} is registered twice: by plugin "
                        f"{found[name].plugin!r} and by plugin {impl.plugin_name!r}"
                    )
                found[name] = RegisteredComponent(
                    kind, name, component, impl.plugin_name, self.version_of(impl.plugin_name)
                )
        return found

    def component(self, kind: str, name: str) -> Any:
        """The component of ``kind`` called ``name``; an unknown name lists the valid ones."""
        registered = self.components(kind)
        if name not in registered:
            raise UnknownComponentError(kind.replace("_", " "), name, registered)
        return registered[name].component

    def all_components(self) -> list[RegisteredComponent]:
        """Every component of every kind, sorted by kind and name."""
        rows = [c for kind in COMPONENT_HOOKS for c in self.components(kind).values()]
        return sorted(rows, key=lambda c: (c.kind, c.name))

    def notify(self, hook_name: str, errors: list[dict[str, str]], **kwargs: Any) -> None:
        """Call a lifecycle hook on each plugin in turn; one that raises is recorded, not fatal."""
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            try:
                self._call_one(hook_name, impl.plugin, **kwargs)
            except Exception as exc:
                errors.append({"plugin": impl.plugin_name, "hook": hook_name, "error": repr(exc)})

    def _call_one(self, hook_name: str, plugin: object, **kwargs: Any) -> Any:
        # Through a hook caller (not impl.function) so that tracing sees the call.
        others = [p for p in self.get_plugins() if p is not plugin]
        (result,) = self.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs) or [None]
        return result


def get_plugin_manager() -> PluginManager:
    """A plugin manager with every plugin of the entry point group registered."""
    pm = PluginManager()
    pm.load_entry_points()
    if os.environ.get("KWSCOMPRESS_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(*_tracers(lambda text: print(text, file=sys.stderr)))
    return pm


def _tracers(write: Callable[[str], None]) -> tuple[Callable[..., None], Callable[..., None]]:
    def before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        plugins = ", ".join(impl.plugin_name for impl in hook_impls)
        write(f"hook {hook_name}({kwargs}) -> plugins [{plugins}]")

    def after(outcome: Any, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        write(f"hook {hook_name} returned {outcome.get_result()!r}")

    return before, after
