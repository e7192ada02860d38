"""The plugin manager: built-in and third-party plugins, loaded the same way.

Every plugin, built-in or not, is a module named in the ``kwscompress`` entry point group.
Two environment variables help debugging, as in datasette:

``KWSCOMPRESS_LOAD_PLUGINS``
    Comma-separated entry point names of the third-party plugins to load; empty loads none.
    Built-in plugins (those shipped in the ``kwscompress`` distribution) always load.
``KWSCOMPRESS_TRACE_PLUGINS``
    When set, every hook call is printed to standard error with its arguments and results.

A plugin that fails to import, whose registration hook raises, or that hands back a component
without a name is *broken*: a one-line warning names it, ``kwscompress plugins`` lists it, its
components are missing, and every other plugin stays usable. A component that raises while it
works is reported as a :class:`~kwscompress.errors.PluginError` naming plugin and component.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pluggy

from kwscompress import hookspecs
from kwscompress.errors import KwsError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "kwscompress"
BUILTIN_DISTRIBUTION = "kwscompress"

COMPONENT_HOOKS = {
    "dataset": "kws_register_datasets",
    "feature_extractor": "kws_register_feature_extractors",
    "model": "kws_register_models",
    "estimator": "kws_register_estimators",
    "quantizer": "kws_register_quantizers",
    "pruner": "kws_register_pruners",
    "exporter": "kws_register_exporters",
    "backend": "kws_register_backends",
    "mcu_runtime": "kws_register_mcu_runtimes",
    "executor": "kws_register_executors",
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

    @property
    def label(self) -> str:
        """``kind 'name'`` for messages, e.g. ``feature extractor 'micro'``."""
        return f"{self.kind.replace('_', ' ')} {self.name!r}"

    def as_dict(self) -> dict[str, str]:
        """JSON-ready row for ``kwscompress plugins --json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "version": self.version,
            "description": getattr(self.component, "description", ""),
            "status": "ok",
        }

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``component.method(*args, **kwargs)``; anything but a :class:`KwsError` it
        raises becomes a :class:`PluginError` naming this plugin and component."""
        try:
            return getattr(self.component, method)(*args, **kwargs)
        except KwsError:
            raise
        except Exception as exc:
            raise PluginError(self.plugin, self.label, exc, f"{method}()") from exc


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with component lookup by kind and name."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self._versions: dict[str, str] = {}
        self.broken: dict[str, str] = {}
        """Broken plugins by name, with what is wrong (warned about once each)."""

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
                self._versions[entry_point.name] = dist.version
                try:
                    self.register(entry_point.load(), name=entry_point.name)
                except Exception as exc:  # a broken plugin must not hide the rest
                    hint = (
                        "to skip it, set KWSCOMPRESS_LOAD_PLUGINS to the third-party plugins "
                        "to load (empty loads none)"
                        if not builtin
                        else "reinstall kwscompress"
                    )
                    self.mark_broken(
                        entry_point.name,
                        f"failed to load ({entry_point.value}): {type(exc).__name__}: {exc}; "
                        + hint,
                    )

    def version_of(self, plugin_name: str) -> str:
        """The distribution version of an entry-point plugin, or ``unknown`` for ad-hoc ones."""
        return self._versions.get(plugin_name, "unknown")

    def components(self, kind: str) -> dict[str, RegisteredComponent]:
        """Every registered component of ``kind``, by name."""
        hook_name = COMPONENT_HOOKS[kind]
        found: dict[str, RegisteredComponent] = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            if impl.plugin_name in self.broken:
                continue
            try:
                components = list(self._call_one(hook_name, impl.plugin) or [])
                for component in components:
                    if not isinstance(getattr(component, "name", None), str) or not component.name:
                        raise ValueError(f"it returned a component without a name: {component!r}")
            except Exception as exc:
                self.mark_broken(impl.plugin_name, f"{hook_name} failed: {exc}")
                continue
            for component in components:
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
        return self.registered(kind, name).component

    def registered(self, kind: str, name: str) -> RegisteredComponent:
        """The component of ``kind`` called ``name`` with its plugin; use ``.call()`` on it."""
        registered = self.components(kind)
        if name not in registered:
            raise UnknownComponentError(kind.replace("_", " "), name, registered, self.broken)
        return registered[name]

    def mark_broken(self, plugin: str, reason: str) -> None:
        """Record a broken plugin and warn once on standard error; its components are skipped."""
        if plugin in self.broken:
            return
        self.broken[plugin] = reason
        print(f"kwscompress: warning: plugin {plugin!r} is broken: {reason}", file=sys.stderr)

    def broken_rows(self) -> list[dict[str, str]]:
        """Rows like :meth:`RegisteredComponent.as_dict` for the broken plugins."""
        self.all_components()  # calling every registration hook finds the broken ones
        return [
            {
                "kind": "",
                "name": "",
                "plugin": plugin,
                "version": self.version_of(plugin),
                "description": reason,
                "status": "broken",
            }
            for plugin, reason in sorted(self.broken.items())
        ]

    def blame(self, error: BaseException) -> PluginError | None:
        """The :class:`PluginError` for ``error`` when a plugin's code raised it, else None.

        The traceback is searched from where it was raised outwards: a frame of a registered
        component's method names plugin and component; otherwise a frame in a plugin's module
        names the plugin. An error raised by kwscompress's own code outside any plugin is a bug
        to report, not a plugin's fault, and gets None.
        """
        if isinstance(error, KwsError):
            return None
        frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)][::-1]
        # By type and name, not identity: registration hooks may hand out new objects per call.
        components = {(type(c.component), c.name): c for c in self.all_components()}

        def owner_of(frame: FrameType) -> RegisteredComponent | None:
            candidate = frame.f_locals.get("self")
            return components.get((type(candidate), getattr(candidate, "name", None)))

        for frame in frames:
            owner = owner_of(frame)
            if owner is not None:
                # The method the pipeline called: the outermost frame of that component.
                entry = next(f for f in reversed(frames) if owner_of(f) is owner)
                return PluginError(owner.plugin, owner.label, error, f"{entry.f_code.co_name}()")
        modules = {
            plugin.__name__: name
            for name, plugin in self.list_name_plugin()
            if isinstance(getattr(plugin, "__name__", None), str)
        }
        for frame in frames:
            module = str(frame.f_globals.get("__name__", ""))
            for prefix, name in modules.items():
                if module == prefix or module.startswith(prefix + "."):
                    return PluginError(name, None, error)
        return None

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
