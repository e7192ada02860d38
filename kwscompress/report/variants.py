"""The compression sweep's report section (entry point ``variants_report``).

Every variant on one page: the Pareto plot of test accuracy against weight bytes and MACs, and
a sortable table of every row of ``results["variants"]`` with what later stages measured about
it (TFLite bytes, arena, emulated and board latency). The methods' own figures (quantization,
pruning) come from their plugins' sections.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from kwscompress import hookimpl
from kwscompress.protocols import ReportSection, SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_int, fmt_ms, fmt_percent
from kwscompress.run import Run


def step_text(steps: list[dict[str, Any]]) -> str:
    """A row's steps in one line: ``channel amount=0.5 -> finetune epochs=3 -> qat bits=8``."""
    if not steps:
        return "trained float model"
    parts = []
    for step in steps:
        shown = {k: v for k, v in (step.get("settings") or {}).items() if not isinstance(v, dict)}
        settings = " ".join(f"{k}={v}" for k, v in shown.items())
        parts.append(f"{step.get('method')} {settings}".strip())
    return " \N{RIGHTWARDS ARROW} ".join(parts)


def _value(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _number(value: Any, shown: str) -> Cell:
    return Cell(shown, sort=value if value is not None else "")


class VariantsSection:
    """Pareto plot and the sortable table of every variant."""

    name = "variants"
    description = "compression variants: Pareto plot and sortable table"
    title = "Compression variants"
    order = 80

    def render(self, run: Run) -> SectionContent | None:
        """None until a sweep has recorded rows."""
        from kwscompress.report import figures

        rows = run.results.get("variants")
        if not isinstance(rows, list) or not rows:
            return None
        ok = [r for r in rows if r.get("status") == "ok" and r.get("accuracy")]
        failed = [r for r in rows if r.get("status") == "failed"]
        summary = run.results.get("compress") or {}
        cards = [
            ("variants", str(len(rows)), f"{summary.get('cached', 0)} from the cache"),
            ("failed", str(len(failed)), "see the table below" if failed else "none"),
        ]
        best = max(ok, key=lambda r: r["accuracy"]["testing"], default=None)
        if best:
            cards.append(
                ("best test accuracy", fmt_percent(best["accuracy"]["testing"]), best["id"])
            )
        smallest = min(
            (
                r
                for r in ok
                if best and r["accuracy"]["testing"] >= best["accuracy"]["testing"] - 0.01
            ),
            key=lambda r: r.get("weight_bytes") or 0,
            default=None,
        )
        if smallest:
            cards.append(
                (
                    "smallest within 1 point",
                    fmt_bytes(smallest.get("weight_bytes")),
                    smallest["id"],
                )
            )
        parts = [blocks.metrics(cards)]
        if len(ok) > 1:
            parts.append(
                blocks.figure(
                    run,
                    figures.pareto(ok, [("weight_bytes", "weight bytes"), ("macs", "MACs")]),
                    "variants-pareto",
                    "Test accuracy against weight bytes and against MACs per inference; the "
                    "line is the Pareto front (no other variant is smaller and more accurate), "
                    "the star the float model.",
                )
            )
        parts.append(
            blocks.paragraph(
                "Every variant of the sweep. Click a column header to sort. Weight bytes count "
                "weights at the variant's bit width and biases at 32 bits (dense: zeros left by "
                "unstructured pruning still take their bytes); parameters, nonzero parameters "
                "and MACs are counted on the float shape (quantization keeps it). Host latency "
                "is the median batch-1 PyTorch forward pass on one thread, fake-quantized "
                "models included, so it shows the host cost, not the device's."
            )
        )
        parts.append(self._table(rows))
        if failed:
            parts.append(
                blocks.note(
                    "; ".join(
                        f"{r['id']}: {(r.get('error') or {}).get('component', '')} from plugin "
                        f"{(r.get('error') or {}).get('plugin', '?')} failed: "
                        f"{(r.get('error') or {}).get('message', '')}"
                        for r in failed
                    ),
                    "error",
                )
            )
        return blocks.combine(*parts)

    @staticmethod
    def _table(rows: list[dict[str, Any]]) -> SectionContent:
        headers = [
            "variant",
            "steps",
            "test",
            "validation",
            "training",
            "params",
            "nonzero",
            "MACs",
            "bits",
            "weight bytes",
            "host ms",
            "TFLite bytes",
            "arena",
            "MCU ms (emulated)",
            "MCU ms (board)",
        ]
        body = []
        for row in rows:
            accuracy = row.get("accuracy") or {}
            status_ok = row.get("status") == "ok"
            cells: list[Any] = [
                Cell(
                    Markup("<code>{}</code>").format(row.get("id", "")),
                    "" if status_ok else "failed",
                    kind="" if status_ok else "bad",
                    sort=row.get("id", ""),
                ),
                step_text(row.get("steps") or []),
            ]
            for split in ("testing", "validation", "training"):
                value = accuracy.get(split)
                cells.append(_number(value, fmt_percent(value)))
            for key, show in (
                ("parameters", fmt_int),
                ("nonzero_parameters", fmt_int),
                ("macs", fmt_int),
                ("weight_bits", fmt_int),
                ("weight_bytes", fmt_int),
                ("host_latency_ms", fmt_ms),
                ("deploy.tflite_bytes", fmt_int),
                ("deploy.arena_bytes", fmt_int),
                ("mcu.ms_at_clock", fmt_ms),
                ("deploy.board_latency_ms", fmt_ms),
            ):
                value = _value(row, key)
                cells.append(_number(value, show(value) if value is not None else MISSING))
            body.append(cells)
        return blocks.table(
            headers,
            body,
            caption=f"{len(rows)} variants; the float model first, then the recipes in order.",
            sortable=True,
        )


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The compression variants section."""
    return [VariantsSection()]
