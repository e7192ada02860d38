"""The "Quantization" report section: PTQ against QAT, by bit width, from measured rows.

It reads ``results["variants"]``: the rows whose steps are exactly one ``quantize`` step with
method ``ptq`` or ``qat`` (prune -> quantize recipes belong elsewhere), and the ``float`` row.
It draws the reference report's Figures 5 and 6 (accuracy per split of the 4- and 8-bit QAT and
PTQ variants, grouped bars), Figure 7 (test accuracy against bit width, one line per method,
the float model as a horizontal line) and a table of every such row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kwscompress.protocols import SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_percent
from kwscompress.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS = ("ptq", "qat")
SPLITS = ("training", "validation", "testing")
FIGURE_BITS = (4, 8)
"""Bit widths of Figures 5 and 6, as in the reference report (other widths are in Figure 7)."""
METHOD_NAMES = {"ptq": "post-training quantization", "qat": "quantization-aware training"}
COLOURS = ("#52606d", "#2f6fb3", "#c8372d", "#3a9d5d", "#e07b39", "#7b4fb3", "#9aa5b1")
METHOD_COLOURS = {"ptq": "#2f6fb3", "qat": "#c8372d"}


def quantize_step(row: dict[str, Any]) -> dict[str, Any] | None:
    """The row's only step when it is a ``ptq`` or ``qat`` quantize step, else None."""
    steps = row.get("steps") or []
    if len(steps) == 1 and steps[0].get("kind") == "quantize" and steps[0].get("method") in METHODS:
        return steps[0]
    return None


def bits_of(row: dict[str, Any]) -> tuple[int, int, bool]:
    """``(weight_bits, act_bits, per_channel)`` of a quantization row (info, else settings)."""
    step = quantize_step(row) or {}
    values = {**(step.get("settings") or {}), **(step.get("info") or {})}
    weight = int(values.get("weight_bits", values.get("bits", 8)))
    return weight, int(values.get("act_bits", weight)), bool(values.get("per_channel", True))


def bits_label(row: dict[str, Any]) -> str:
    """``4-bit``, ``w4a8``, with `` per-tensor`` when the weights are not per channel."""
    weight, act, per_channel = bits_of(row)
    text = f"{weight}-bit" if weight == act else f"w{weight}a{act}"
    return text if per_channel else f"{text} per-tensor"


class QuantizationSection:
    """PTQ and QAT variants: the reference report's Figures 5-7 and a table, from measured rows."""

    name = "quantization"
    description = "quantization sweeps: accuracy per split and per bit width, PTQ against QAT"
    title = "Quantization"
    order = 82

    def render(self, run: Run) -> SectionContent | None:
        """Figures and table; None when the run has no ``ptq`` / ``qat`` rows."""
        variants = run.results.get("variants") or []
        rows = [row for row in variants if quantize_step(row) is not None]
        if not rows:
            return None
        baseline = next((row for row in variants if row.get("id") == "float"), None)
        ok = [row for row in rows if row.get("status") == "ok" and row.get("accuracy")]
        parts: list[SectionContent | None] = [
            blocks.paragraph(
                "Each variant quantizes the trained float model with Brevitas: weights and "
                "activations at the bit widths shown (weights per output channel for the "
                "convolutions unless marked per-tensor, per tensor for the fully connected "
                "layer), 8-bit input and logits, activation scales calibrated on training "
                "batches. QAT then fine-tunes through the quantizers. Accuracies are measured "
                "in TFLM's integer arithmetic: in eval mode each variant computes its int8 "
                "graph's logits bit for bit, so they are its exported file's accuracy in TFLM."
            )
        ]
        figure_number = 5
        for method in ("qat", "ptq"):
            chosen = _figure_rows(ok, method)
            if chosen:
                caption = (
                    f"Figure {figure_number}: accuracy of the "
                    + ", ".join(bits_label(row) for row in chosen)
                    + f" {method.upper()} variants ({METHOD_NAMES[method]}) per split"
                )
                fig = _split_bars(chosen, baseline)
                parts.append(blocks.figure(run, fig, f"quantization-{method}-splits", caption))
            figure_number += 1
        if ok:
            parts.append(
                blocks.figure(
                    run,
                    _bits_lines(ok, baseline),
                    "quantization-bits",
                    "Figure 7: test accuracy against weight bit width, PTQ and QAT",
                )
            )
        parts.append(_table(rows, baseline))
        return blocks.combine(*parts)


def _figure_rows(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """The method's rows at 4 and 8 bits (all of its rows when it has neither), by bit width."""
    mine = [row for row in rows if quantize_step(row)["method"] == method]
    preferred = [row for row in mine if bits_of(row)[0] in FIGURE_BITS]
    return sorted(preferred or mine, key=lambda row: (bits_of(row), row.get("id", "")))


def _new_figure(width: float) -> Figure:
    from matplotlib.figure import Figure  # matplotlib loads only when a report is drawn

    return Figure(figsize=(width, 3.6), layout="constrained")


def _split_bars(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> Figure:
    series = ([("float", baseline)] if baseline and baseline.get("accuracy") else []) + [
        (bits_label(row), row) for row in rows
    ]
    fig = _new_figure(6.4)
    ax = fig.subplots()
    width = 0.8 / len(series)
    for index, (label, row) in enumerate(series):
        values = [100 * (row["accuracy"].get(split) or 0.0) for split in SPLITS]
        positions = [s + (index - (len(series) - 1) / 2) * width for s in range(len(SPLITS))]
        bars = ax.bar(positions, values, width, label=label, color=COLOURS[index % len(COLOURS)])
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(SPLITS)), SPLITS)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def _bits_lines(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> Figure:
    fig = _new_figure(6.4)
    ax = fig.subplots()
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        weight, act, per_channel = bits_of(row)
        method = quantize_step(row)["method"]
        name = method.upper() + ("" if weight == act else f" (act {act}-bit)")
        name += "" if per_channel else " per-tensor"
        series.setdefault(name, []).append((weight, 100 * row["accuracy"]["testing"]))
    for index, (name, points) in enumerate(sorted(series.items())):
        points.sort()
        method = name.split()[0].lower()
        plain = name.upper() == method.upper()
        ax.plot(
            [bits for bits, _ in points],
            [accuracy for _, accuracy in points],
            marker="o",
            label=name,
            color=METHOD_COLOURS[method] if plain else COLOURS[(index + 3) % len(COLOURS)],
            linestyle="-" if plain else "--",
        )
    if baseline and (baseline.get("accuracy") or {}).get("testing") is not None:
        accuracy = 100 * baseline["accuracy"]["testing"]
        ax.axhline(accuracy, color="#52606d", linestyle=":", label=f"float ({accuracy:.1f} %)")
    ax.set_xlabel("weight bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sorted({bits for points in series.values() for bits, _ in points}))
    ax.legend(fontsize=8)
    return fig


def _table(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> SectionContent:
    body = []
    ordered = sorted(rows, key=lambda r: (quantize_step(r)["method"], bits_of(r), r.get("id", "")))
    for row in ([baseline] if baseline else []) + ordered:
        accuracy = row.get("accuracy") or {}
        if row is baseline:
            method, weight, act, per_channel = "float", "32", "32", MISSING
        else:
            method = quantize_step(row)["method"]
            bits = bits_of(row)
            weight, act, per_channel = str(bits[0]), str(bits[1]), "yes" if bits[2] else "no"
        if row.get("status", "ok") != "ok":
            message = (row.get("error") or {}).get("message", "failed")
            cells = [Cell("failed", detail=message, kind="bad")] + [MISSING] * 3
        else:
            cells = [fmt_percent(accuracy.get(split)) for split in SPLITS] + [
                fmt_bytes(row.get("weight_bytes"))
            ]
        body.append([row.get("id", MISSING), method, weight, act, per_channel, *cells])
    return blocks.table(
        [
            "variant",
            "method",
            "weight bits",
            "activation bits",
            "per-channel",
            "training",
            "validation",
            "testing",
            "weight bytes",
        ],
        body,
        caption="Quantized variants (accuracy per split, weights at their bit width)",
    )
