"""Building blocks of report sections: each returns HTML and Markdown of the same content.

A section (built-in or from a plugin) composes these and hands back one
:class:`~kwscompress.protocols.SectionContent`::

    from kwscompress.report import blocks

    def render(self, run):
        return blocks.combine(
            blocks.paragraph("Pruned variants, best first."),
            blocks.table(["variant", "accuracy"], [["tiny_conv-50%", "91.0 %"]]),
            blocks.figure(run, my_matplotlib_figure, "pruning-sweep", "Accuracy vs parameters"),
        )

Text passed to these helpers is escaped for HTML; pass :class:`markupsafe.Markup` to insert
HTML on purpose (the Markdown side then shows its text with the tags removed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from kwscompress.protocols import SectionContent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kwscompress.run import Run

MISSING = "\N{EN DASH}"
"""What a cell shows for a value that does not exist."""

NOT_MEASURED = "not measured yet"
"""What a measured cell shows before the stage that measures it has run."""

_TAG = re.compile(r"<[^>]+>")
_BADGE = re.compile(r'<span class="badge">([^<]*)</span>')
_PLOT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Cell:
    """A table cell with a main value and an optional small second line (``detail``)."""

    value: Any
    detail: str = ""
    kind: str = ""
    """CSS class of the cell: ``good``, ``bad``, ``muted`` or empty."""
    sort: Any = None
    """The value a sortable table orders this cell by (a number, or text); default its text."""


def combine(*parts: SectionContent | None) -> SectionContent:
    """Join blocks in order; ``None`` parts are skipped."""
    kept = [part for part in parts if part is not None]
    return SectionContent(
        html="\n".join(part.html for part in kept),
        markdown="\n\n".join(part.markdown.strip("\n") for part in kept if part.markdown.strip()),
    )


def paragraph(text: str) -> SectionContent:
    """A paragraph of text (:class:`markupsafe.Markup` keeps its HTML)."""
    return SectionContent(f"<p>{_html_value(text)}</p>", _plain(text))


def heading(text: str) -> SectionContent:
    """A sub-heading inside a section."""
    return SectionContent(f"<h3>{escape(text)}</h3>", f"### {_plain(text)}")


def note(text: str, kind: str = "info") -> SectionContent:
    """A highlighted remark; ``kind`` is ``info``, ``warn`` or ``error``."""
    label = {"info": "Note", "warn": "Warning", "error": "Error"}[kind]
    return SectionContent(
        f'<div class="note note-{kind}">{_html_value(text)}</div>',
        f"> **{label}:** {_plain(text)}",
    )


def badge(text: str) -> Markup:
    """A small label (for example ``estimate``) to put in a paragraph or a table cell."""
    return Markup('<span class="badge">{}</span>').format(text)


def metrics(items: Sequence[tuple[str, str, str]]) -> SectionContent:
    """Headline numbers as cards: ``(label, value, detail)`` each."""
    cards = "".join(
        f'<div class="metric"><div class="metric-value">{escape(value)}</div>'
        f'<div class="metric-label">{escape(label)}</div>'
        f'<div class="metric-detail">{escape(detail)}</div></div>'
        for label, value, detail in items
    )
    rows = [[_markdown_cell(part) for part in item] for item in items]
    markdown = _markdown_table(["", "value", ""], rows)
    return SectionContent(f'<div class="metrics">{cards}</div>', markdown)


def definitions(items: Iterable[tuple[str, Any]]) -> SectionContent:
    """A two-column list of ``(term, value)`` pairs."""
    pairs = [(term, value) for term, value in items if value not in (None, "")]
    html = "".join(f"<dt>{escape(term)}</dt><dd>{_html_value(value)}</dd>" for term, value in pairs)
    markdown = "\n".join(f"- **{_plain(term)}:** {_plain(str(value))}" for term, value in pairs)
    return SectionContent(f'<dl class="definitions">{html}</dl>', markdown)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str = "",
    footer: Sequence[Sequence[Any]] = (),
    sortable: bool = False,
) -> SectionContent:
    """A table; numbers are right-aligned, :class:`Cell` values may carry a detail line.

    :param footer: rows shown bold below a rule (totals).
    :param sortable: clicking a header sorts the rows by that column (ascending, then
        descending), by each cell's :attr:`Cell.sort` value when it has one. The page needs no
        server: the few lines of script travel inside the table's HTML.
    """
    if sortable:
        head = "".join(
            f'<th data-column="{i}" title="sort by {escape(h)}">{escape(h)}</th>'
            for i, h in enumerate(headers)
        )
        body = "".join(_html_row(row) for row in rows)
        cap = f"<caption>{escape(caption)}</caption>" if caption else ""
        html = (
            f'<div class="table-wrap"><table class="sortable">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{_SORT_SCRIPT}"
        )
        return SectionContent(html, table(headers, rows, caption=caption).markdown)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(_html_row(row) for row in rows)
    foot = "".join(_html_row(row) for row in footer)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    html = (
        f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody>{f'<tfoot>{foot}</tfoot>' if foot else ''}</table></div>"
    )
    md_rows = [[_markdown_cell(c) for c in row] for row in rows]
    md_rows += [
        [f"**{_markdown_cell(c)}**" if _markdown_cell(c) else "" for c in row] for row in footer
    ]
    markdown = _markdown_table(list(headers), md_rows)
    if caption:
        markdown = f"*{_plain(caption)}*\n\n{markdown}"
    return SectionContent(html, markdown)


def estimate_measured(
    rows: Sequence[tuple[str, str, str | None]], *, caption: str = ""
) -> SectionContent:
    """A table of ``(quantity, estimate, measured)``; a ``None`` measurement shows
    :data:`NOT_MEASURED`.

    Use it wherever a number is estimated before a later stage measures it, so the two stand
    side by side and a missing measurement is visible instead of silently absent.
    """
    cells = [
        [
            quantity,
            estimate,
            Cell(measured) if measured is not None else Cell(NOT_MEASURED, kind="muted"),
        ]
        for quantity, estimate, measured in rows
    ]
    return table(["quantity", "estimate", "measured"], cells, caption=caption)


def figure(run: Run, fig: Figure, name: str, caption: str) -> SectionContent:
    """Save ``fig`` as ``plots/<name>.png`` in the run and show it with ``caption``.

    The HTML references the PNG by its relative path; :func:`kwscompress.report.write_report`
    embeds it as a data URI so that ``report.html`` needs no other file.

    :param name: lowercase letters, digits, ``-`` and ``_``; unique within one report.
    """
    from kwscompress.report.render import claim_plot_name, save_png

    if not _PLOT_NAME.fullmatch(name):
        raise ValueError(f"plot name {name!r} must be lowercase letters, digits, '-' or '_'")
    claim_plot_name(name)
    save_png(fig, run.subdir("plots") / f"{name}.png")
    src = f"plots/{name}.png"
    html = (
        f'<figure><img src="{src}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )
    return SectionContent(html, f"![{_plain(caption)}]({src})\n\n*{_plain(caption)}*")


def columns(*parts: SectionContent) -> SectionContent:
    """Blocks side by side in HTML (stacked on narrow screens), one after another in Markdown."""
    inner = "".join(f"<div>{part.html}</div>" for part in parts)
    return SectionContent(f'<div class="grid-2">{inner}</div>', combine(*parts).markdown)


def details(summary: str, content: SectionContent) -> SectionContent:
    """Content folded away under ``summary`` in HTML (shown in full in Markdown)."""
    html = f"<details><summary>{escape(summary)}</summary>{content.html}</details>"
    return SectionContent(html, f"**{_plain(summary)}**\n\n{content.markdown}")


# -- formatting ---------------------------------------------------------------------------------


def fmt_int(value: float | None) -> str:
    """``16652`` -> ``16,652``; ``None`` -> :data:`MISSING`."""
    return MISSING if value is None else f"{round(value):,}"


def fmt_percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: ``0.9035`` -> ``90.4 %``."""
    return MISSING if fraction is None else f"{100 * fraction:.{digits}f} %"


def fmt_bytes(count: float | None) -> str:
    """Bytes with the exact count and a binary-prefixed size: ``66,608 B (65.0 KiB)``."""
    if count is None:
        return MISSING
    if count < 1024:
        return f"{round(count):,} B"
    for unit, scale in (("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{round(count):,} B ({count / scale:.1f} {unit})"
    raise AssertionError("unreachable")


def fmt_ms(value: float | None) -> str:
    """Milliseconds with three significant decimals below 1 ms."""
    if value is None:
        return MISSING
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


# -- internals ----------------------------------------------------------------------------------

# Sorts a table.sortable by the clicked column: numbers numerically (from data-sort, else the
# cell's text), text alphabetically, empty cells last; a second click reverses. Installed once
# per page however many sortable tables there are.
_SORT_SCRIPT = """<script>
(function () {
  if (window.kwsSortable) { return; }
  window.kwsSortable = true;
  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.innerText;
    var number = parseFloat(String(raw).replace(/,/g, ""));
    return isNaN(number) ? String(raw).trim().toLowerCase() : number;
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : (a > b ? 1 : 0); }
    return typeof a === "number" ? -1 : 1;
  }
  document.addEventListener("click", function (event) {
    var th = event.target.closest("table.sortable th");
    if (!th) { return; }
    var table = th.closest("table"), body = table.tBodies[0];
    var column = Number(th.getAttribute("data-column"));
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1.cells[column]), b = key(r2.cells[column]);
      if (a === "" || b === "") { return a === b ? 0 : (a === "" ? 1 : -1); }
      return ascending ? compare(a, b) : -compare(a, b);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
})();
</script>"""


def _plain(text: str) -> str:
    return _TAG.sub("", _BADGE.sub(r"[\1]", str(text))).replace("|", "\\|").replace("\n", " ")


def _html_value(value: Any) -> str:
    return str(value) if isinstance(value, Markup) else str(escape(str(value)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _html_row(row: Sequence[Any]) -> str:
    cells = []
    for value in row:
        cell = value if isinstance(value, Cell) else Cell(value)
        classes = [cell.kind] if cell.kind else []
        shown = cell.value
        if _is_number(shown):
            classes.append("num")
            shown = f"{shown:,}" if isinstance(shown, int) else f"{shown:,.4g}"
        elif isinstance(shown, str) and re.fullmatch(r"[-+]?[\d,.]+( ?[%a-zA-Z]+.*)?", shown):
            classes.append("num")
        detail = f'<span class="detail">{escape(cell.detail)}</span>' if cell.detail else ""
        attr = f' class="{" ".join(classes)}"' if classes else ""
        if cell.sort is not None:
            attr += f' data-sort="{escape(str(cell.sort))}"'
        cells.append(f"<td{attr}>{_html_value(shown)}{detail}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def _markdown_cell(value: Any) -> str:
    cell = value if isinstance(value, Cell) else Cell(value)
    shown = cell.value
    if _is_number(shown):
        shown = f"{shown:,}" if isinstance(shown, int) else f"{shown:,.4g}"
    text = _plain(str(shown))
    return f"{text} ({_plain(cell.detail)})" if cell.detail else text


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(_plain(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
