"""Assemble every registered report section into ``report.html`` and ``report.md``.

Sections come from the ``kws_register_report_sections`` hook (built-in ones from
:mod:`kwscompress.report.sections`, more from any plugin) and are rendered in ``order``. A
section that raises becomes an error box naming its plugin and section, and is recorded in
``results.json`` under ``report.errors``; the rest of the report still renders. A section that
returns ``None`` (its stage has not run) is left out.

``report.html`` is one self-contained file: the CSS is inline and every image is a ``data:``
URI, so it opens from disk, offline, and can be mailed as it is. ``report.md`` shows the same
content and references the PNGs in ``plots/``.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import mimetypes
import platform
import re
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from kwscompress.errors import KwsError
from kwscompress.run import Run, atomic_open, atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kwscompress.plugins import PluginManager
    from kwscompress.protocols import SectionContent

PNG_DPI = 110
"""Resolution of saved plots; sharp on a laptop screen without bloating the page."""

_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]*)(")', re.IGNORECASE)


@dataclass
class _RenderState:
    plugin_manager: PluginManager
    plot_names: set[str] = field(default_factory=set)


_STATE: contextvars.ContextVar[_RenderState | None] = contextvars.ContextVar(
    "kwscompress_report_state", default=None
)


@dataclass
class RenderedSection:
    """The outcome of one section: its content, or the error it raised."""

    name: str
    title: str
    plugin: str
    order: int
    anchor: str
    content: SectionContent | None = None
    error: str = ""
    traceback: str = ""


def current_plugin_manager() -> PluginManager:
    """The plugin manager of the report being written (sections use it to find components).

    Outside :func:`write_report` a fresh manager with every entry-point plugin is returned.
    """
    state = _STATE.get()
    if state is not None:
        return state.plugin_manager
    from kwscompress.plugins import get_plugin_manager

    return get_plugin_manager()


def claim_plot_name(name: str) -> None:
    """Reserve a plot file name for this report; a second section using it is a bug."""
    state = _STATE.get()
    if state is None:
        return
    if name in state.plot_names:
        raise ValueError(f"plot name {name!r} is used twice in one report")
    state.plot_names.add(name)


def save_png(fig: Figure, path: Path) -> None:
    """Write a matplotlib figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=PNG_DPI, facecolor="white")


def load_run(path: str | Path) -> Run:
    """Open an existing run directory for reporting.

    :raises KwsError: ``path`` holds no ``results.json`` (it is not a run directory).
    """
    path = Path(path)
    if not (path / "results.json").is_file():
        raise KwsError(
            f"{str(path)!r} has no results.json; give the directory of a run "
            "(for example runs/kws) created by `kwscompress run`"
        )
    return Run(path)


def write_report(run: Run, plugin_manager: PluginManager | None = None) -> dict[str, Path]:
    """Render every report section of ``run`` into ``report.html`` and ``report.md``.

    :param run: a run directory with a ``results.json``.
    :param plugin_manager: where the sections (and the components they use) come from;
        by default every plugin of the ``kwscompress`` entry point group.
    :returns: ``{"html": path, "markdown": path}``.
    :raises KwsError: the run has no ``results.json``.
    """
    if not run.results_path.is_file():
        raise KwsError(
            f"{str(run.results_path)!r} does not exist; a report needs a run directory "
            "with results.json"
        )
    if plugin_manager is None:
        from kwscompress.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager()
    token = _STATE.set(_RenderState(plugin_manager))
    try:
        sections = render_sections(run, plugin_manager)
    finally:
        _STATE.reset(token)

    context = _page_context(run, sections)
    env = _environment()
    paths = {"html": run.path / "report.html", "markdown": run.path / "report.md"}
    with atomic_open(paths["html"]) as handle:
        handle.write(env.get_template("report.html.j2").render(context))
    with atomic_open(paths["markdown"]) as handle:
        handle.write(env.get_template("report.md.j2").render(context))

    errors = [
        {"plugin": s.plugin, "section": s.name, "error": s.error} for s in sections if s.error
    ]
    for error in errors:
        run.log.warning("report section %(section)s (%(plugin)s) failed: %(error)s", error)
    run.record(
        "report",
        {
            "html": paths["html"].name,
            "markdown": paths["markdown"].name,
            "sections": [s.name for s in sections if s.content is not None or s.error],
            "errors": errors,
        },
    )
    return paths


def render_sections(run: Run, plugin_manager: PluginManager) -> list[RenderedSection]:
    """Render every registered section in ``order``; failures are captured, not raised."""
    registered = sorted(
        plugin_manager.components("report_section").values(),
        key=lambda r: (getattr(r.component, "order", 1000), r.name),
    )
    rendered = []
    for entry in registered:
        section = entry.component
        result = RenderedSection(
            name=entry.name,
            title=str(getattr(section, "title", entry.name)),
            plugin=entry.plugin,
            order=int(getattr(section, "order", 1000)),
            anchor=re.sub(r"[^a-z0-9-]+", "-", entry.name.lower()).strip("-") or "section",
        )
        try:
            content = section.render(run)
            if content is not None:
                content = type(content)(_embed_images(content.html, run.path), content.markdown)
            result.content = content
        except Exception as exc:  # one broken section must not take the report down
            result.error = f"{type(exc).__name__}: {exc}"
            result.traceback = traceback.format_exc()
        rendered.append(result)
    return rendered


def _embed_images(html: str, root: Path) -> str:
    # Sections reference their PNGs by relative path (as report.md does); the HTML inlines them.
    def inline(match: re.Match[str]) -> str:
        src = match.group(2)
        if src.startswith("data:"):
            return match.group(0)
        path = (root / src).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise KwsError(f"image {src!r} is not a file inside the run directory {str(root)!r}")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    return _IMG_SRC.sub(inline, html)


def _page_context(run: Run, sections: list[RenderedSection]) -> dict[str, Any]:
    from kwscompress import __version__

    shown = [s for s in sections if s.content is not None or s.error]
    env = _environment()
    config = run.results.get("config") or {}
    name = (config.get("run") or {}).get("name") or run.path.name
    return {
        "run_name": name,
        "run_path": str(run.path),
        "sections": shown,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "python": platform.python_version(),
        "css": Markup(env.loader.get_source(env, "report.css")[0]),
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kwscompress.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
