"""The "Pruning" report section: accuracy against size, MACs and latency, per pruning sweep.

It reads ``results["variants"]``: the rows whose first step is a ``prune`` step and whose other
steps are ``finetune`` steps (prune -> quantize recipes belong to the quantization section).
Rows are grouped by recipe, pruning method and every prune setting except ``amount``; inside a
group, the fine-tuning epochs split the curves (0 = without fine-tuning).

A group whose prune steps report ``info["structured"]`` (``channel``, or any third-party pruner
that says so) gets the structured figures and table; the others get the unstructured ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kwscompress.protocols import SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_int, fmt_ms, fmt_percent
from kwscompress.run import Run
from kwscompress_torch_pruning.magnitude import SPEED_NOTE

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NOT_MEASURED = "not measured"
FLOAT_COLOUR = "#52606d"
EPOCH_COLOURS = ("#c8372d", "#2f6fb3", "#3a9d5d", "#e07b39", "#7b4fb3")


@dataclass
class Group:
    """The rows of one pruning sweep."""

    recipe: str
    method: str
    settings: tuple[tuple[str, Any], ...]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``recipe (method, key=value, ...)``; the method is left out when it names the recipe."""
        details = ([] if self.method == self.recipe else [self.method]) + [
            f"{k}={v}" for k, v in self.settings
        ]
        return self.recipe + (f" ({', '.join(details)})" if details else "")

    @property
    def ok(self) -> list[dict[str, Any]]:
        """Rows that finished."""
        return [row for row in self.rows if row.get("status") == "ok"]

    @property
    def structured(self) -> bool:
        """Whether the pruner removed whole channels."""
        return any(prune_step(row).get("info", {}).get("structured") for row in self.ok)

    def by_epochs(self) -> dict[int, list[dict[str, Any]]]:
        """Finished rows per fine-tuning epochs, each list sorted by amount."""
        split: dict[int, list[dict[str, Any]]] = {}
        for row in sorted(self.ok, key=amount_of):
            split.setdefault(finetune_epochs(row), []).append(row)
        return dict(sorted(split.items()))


class PruningSection:
    """Pruning sweeps: the reference report's Figures 8-10 and Table 5, from measured rows."""

    name = "pruning"
    description = "pruning sweeps: accuracy vs nonzero weights, parameters, MACs and latency"
    title = "Pruning"
    order = 84

    def render(self, run: Run) -> SectionContent | None:
        """One part per pruning sweep; None when the run has no pruning rows."""
        variants = run.results.get("variants") or []
        groups = group_rows(variants)
        if not groups:
            return None
        baseline = next((row for row in variants if row.get("id") == "float"), None)
        names = _PlotNames()
        parts: list[SectionContent | None] = [
            blocks.paragraph(
                "Each pruned variant starts from the trained float model; rows with 0 fine-tuning "
                "epochs are measured straight after pruning. Every number in a table row comes "
                "from that variant's own record: parameters and MACs are those of the pruned "
                "model, and accuracy is on the test split."
            )
        ]
        for group in groups:
            parts.append(blocks.heading(group.label))
            if not group.ok:
                parts.append(blocks.note("No variant of this sweep finished.", "warn"))
            elif group.structured:
                parts.extend(_structured(run, group, baseline, names))
            else:
                parts.extend(_unstructured(run, group, baseline, names))
        failed = [row for group in groups for row in group.rows if row.get("status") != "ok"]
        if failed:
            parts.append(_failures(failed))
        return blocks.combine(*parts)


# -- reading rows -------------------------------------------------------------------------------


def prune_step(row: dict[str, Any]) -> dict[str, Any]:
    """The row's prune step (the first step)."""
    return (row.get("steps") or [{}])[0]


def is_pruning_row(row: dict[str, Any]) -> bool:
    """A prune step followed only by fine-tuning steps."""
    steps = row.get("steps") or []
    return (
        bool(steps)
        and steps[0].get("kind") == "prune"
        and all(step.get("kind") == "finetune" for step in steps[1:])
    )


def amount_of(row: dict[str, Any]) -> float:
    """The prune step's ``amount``."""
    return float((prune_step(row).get("settings") or {}).get("amount", 0.0))


def finetune_epochs(row: dict[str, Any]) -> int:
    """Fine-tuning epochs after pruning (0 = without)."""
    return sum(
        int((step.get("settings") or {}).get("epochs", 0))
        for step in row.get("steps", [])[1:]
        if step.get("kind") == "finetune"
    )


def group_rows(variants: Iterable[dict[str, Any]]) -> list[Group]:
    """The pruning rows, grouped by recipe, method and the prune settings other than amount."""
    groups: dict[tuple[Any, ...], Group] = {}
    for row in variants:
        if not is_pruning_row(row):
            continue
        step = prune_step(row)
        settings = tuple(
            sorted((k, v) for k, v in (step.get("settings") or {}).items() if k != "amount")
        )
        key = (row.get("recipe", ""), step.get("method", ""), repr(settings))
        if key not in groups:
            groups[key] = Group(str(key[0]), str(key[1]), settings)
        groups[key].rows.append(row)
    return list(groups.values())


def test_accuracy(row: dict[str, Any] | None) -> float | None:
    """Test-split accuracy (a fraction), or None."""
    return ((row or {}).get("accuracy") or {}).get("testing")


def mcu_latency(row: dict[str, Any]) -> tuple[float | None, str]:
    """Latency on the MCU and where it comes from: measured on a board first, else emulated."""
    measured = (row.get("deploy") or {}).get("board_latency_ms")
    if measured is not None:
        return float(measured), "measured on the board"
    emulated = (row.get("mcu") or {}).get("ms_at_clock")
    if emulated is not None:
        return float(emulated), "emulated at the board clock"
    return None, NOT_MEASURED


def epochs_label(epochs: int) -> str:
    """``without fine-tuning`` or ``fine-tuned N epochs``."""
    if epochs == 0:
        return "without fine-tuning"
    return f"fine-tuned {epochs} epoch{'s' * (epochs != 1)}"


# -- structured ---------------------------------------------------------------------------------


def _structured(
    run: Run, group: Group, baseline: dict[str, Any] | None, names: _PlotNames
) -> list[SectionContent | None]:
    curves = group.by_epochs()
    parts: list[SectionContent | None] = []
    fig = _figure(2)
    _plot(fig.axes[0], curves, baseline, "parameters", "parameters")
    _plot(fig.axes[1], curves, baseline, "macs", "MACs per inference")
    parts.append(
        blocks.figure(
            run,
            fig,
            names.claim(group, "params-macs"),
            f"{group.label}: test accuracy against parameters and MACs of the pruned model, "
            "with and without fine-tuning (the reference report's Figure 9).",
        )
    )
    has_host = any(row.get("host_latency_ms") is not None for row in group.ok)
    has_mcu = any(mcu_latency(row)[0] is not None for row in group.ok)
    if has_host or has_mcu:
        fig = _figure(int(has_host) + int(has_mcu))
        axes = list(fig.axes)
        if has_host:
            _plot(axes.pop(0), curves, baseline, "host_latency_ms", "host latency (ms, batch 1)")
        if has_mcu:
            sources = sorted({mcu_latency(row)[1] for row in group.ok} - {NOT_MEASURED})
            _plot(
                axes.pop(0), curves, baseline, "mcu_ms", f"MCU latency (ms, {'; '.join(sources)})"
            )
        parts.append(
            blocks.figure(
                run,
                fig,
                names.claim(group, "latency"),
                f"{group.label}: test accuracy against latency (the reference report's "
                "Figure 10)." + ("" if has_mcu else " MCU latency: not measured."),
            )
        )
    if not has_mcu:
        parts.append(
            blocks.note(
                "MCU latency: not measured. It appears here once the variants are emulated "
                "(mcu.ms_at_clock) or run on a board (deploy.board_latency_ms)."
            )
        )
    parts.append(_structured_table(group, curves, baseline))
    return parts


def _structured_table(
    group: Group, curves: dict[int, list[dict[str, Any]]], baseline: dict[str, Any] | None
) -> SectionContent:
    epochs = list(curves)
    by_amount: dict[float, dict[int, dict[str, Any]]] = {}
    for count, rows in curves.items():
        for row in rows:
            by_amount.setdefault(amount_of(row), {})[count] = row
    headers = [
        "amount",
        "kept channels",
        "FC input neurons",
        "parameters",
        "MACs",
        "host latency",
        "MCU latency",
        *(f"test accuracy, {epochs_label(e)}" for e in epochs),
    ]
    rows = []
    if baseline is not None:
        rows.append(
            [
                Cell("0", "float model"),
                MISSING,
                MISSING,
                fmt_int(baseline.get("parameters")),
                fmt_int(baseline.get("macs")),
                fmt_ms(baseline.get("host_latency_ms")),
                _mcu_cell(baseline),
                *(fmt_percent(test_accuracy(baseline)) if e == 0 else MISSING for e in epochs),
            ]
        )
    for amount, variants in sorted(by_amount.items()):
        # The structural columns and latencies describe one model: the pruned one before any
        # fine-tuning (fine-tuning changes weights, never shapes); the fewest-epochs row otherwise.
        model_row = variants[min(variants)]
        info = prune_step(model_row).get("info") or {}
        rows.append(
            [
                f"{amount:g}",
                _channels_text(info.get("kept_channels")),
                fmt_int(info.get("fc_in_features")),
                fmt_int(model_row.get("parameters")),
                fmt_int(model_row.get("macs")),
                fmt_ms(model_row.get("host_latency_ms")),
                _mcu_cell(model_row),
                *(_accuracy_cell(variants.get(e)) for e in epochs),
            ]
        )
    return blocks.table(
        headers,
        rows,
        caption=f"{group.label}: the pruned models (the reference report's Table 5, every "
        "column of a row from the same model).",
    )


def _channels_text(kept: Any) -> str:
    if not kept:
        return MISSING
    if len(set(kept)) == 1 and len(kept) > 1:
        return f"{kept[0]} in each of {len(kept)} layers"
    return ", ".join(str(k) for k in kept)


def _mcu_cell(row: dict[str, Any]) -> Cell:
    value, source = mcu_latency(row)
    if value is None:
        return Cell(NOT_MEASURED, kind="muted")
    return Cell(fmt_ms(value), source)


# -- unstructured -------------------------------------------------------------------------------


def _unstructured(
    run: Run, group: Group, baseline: dict[str, Any] | None, names: _PlotNames
) -> list[SectionContent | None]:
    curves = group.by_epochs()
    fig = _figure(1)
    _plot(fig.axes[0], curves, baseline, "nonzero_parameters", "nonzero parameters")
    figure = blocks.figure(
        run,
        fig,
        names.claim(group, "nonzero"),
        f"{group.label}: test accuracy against nonzero parameters, with and without "
        "fine-tuning (the reference report's Figure 8).",
    )
    epochs = list(curves)
    by_amount: dict[float, dict[int, dict[str, Any]]] = {}
    for count, rows in curves.items():
        for row in rows:
            by_amount.setdefault(amount_of(row), {})[count] = row
    table_rows = []
    for amount, variants in sorted(by_amount.items()):
        info = prune_step(variants[min(variants)]).get("info") or {}
        sizes = info.get("encodings") or {}
        table_rows.append(
            [
                f"{amount:g}",
                Cell(
                    fmt_int(info.get("nonzero_weights")),
                    f"of {fmt_int(info.get('prunable_weights'))}",
                ),
                *(_bytes_cell(sizes, key) for key in ("dense_bytes", "bitmask_bytes", "csr_bytes")),
                *(_accuracy_cell(variants.get(e)) for e in epochs),
            ]
        )
    table = blocks.table(
        [
            "amount",
            "nonzero weights",
            "dense, int8 (float32)",
            "bitmask, int8 (float32)",
            "CSR, int8 (float32)",
            *(f"test accuracy, {epochs_label(e)}" for e in epochs),
        ],
        table_rows,
        caption=f"{group.label}: Conv2d/Linear weights after pruning and the flash their "
        "encodings take (bitmask: one bit per weight + nonzero values; CSR: values, 16-bit "
        "column indices and row pointers). Biases are stored densely in every encoding.",
    )
    return [figure, table, blocks.note(f"Speed: {SPEED_NOTE}.")]


def _bytes_cell(sizes: dict[str, Any], key: str) -> Cell:
    int8, fp32 = (sizes.get(bits, {}).get(key) for bits in ("8", "32"))
    if int8 is None:
        return Cell(MISSING)
    return Cell(fmt_bytes(int8), f"float32: {fmt_bytes(fp32)}")


# -- shared -------------------------------------------------------------------------------------


def _accuracy_cell(row: dict[str, Any] | None) -> Cell | str:
    if row is None:
        return MISSING
    return fmt_percent(test_accuracy(row))


def _failures(rows: list[dict[str, Any]]) -> SectionContent:
    lines = []
    for row in rows:
        error = row.get("error") or {}
        where = f" ({error['plugin']})" if error.get("plugin") else ""
        lines.append(f"{row.get('id', '?')}{where}: {error.get('message', 'no message')}")
    return blocks.note(
        f"{len(rows)} pruning variant{'s' * (len(rows) != 1)} failed: " + "; ".join(lines),
        "error",
    )


def _value(row: dict[str, Any], key: str) -> float | None:
    value = mcu_latency(row)[0] if key == "mcu_ms" else row.get(key)
    return None if value is None else float(value)


def _figure(panels: int) -> Any:
    from matplotlib.figure import Figure  # matplotlib loads only when a report is drawn

    fig = Figure(figsize=(5.2 * panels, 3.8), layout="constrained")
    fig.subplots(1, panels, squeeze=False)
    return fig


def _plot(
    ax: Axes,
    curves: dict[int, list[dict[str, Any]]],
    baseline: dict[str, Any] | None,
    key: str,
    xlabel: str,
) -> None:
    from matplotlib.ticker import StrMethodFormatter

    for index, (epochs, rows) in enumerate(curves.items()):
        points = [
            (x, 100 * acc, amount_of(row))
            for row in rows
            if (x := _value(row, key)) is not None and (acc := test_accuracy(row)) is not None
        ]
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        colour = EPOCH_COLOURS[index % len(EPOCH_COLOURS)]
        ax.plot(xs, ys, "o-", color=colour, label=epochs_label(epochs))
        for x, y, amount in points:
            ax.annotate(
                f"{amount:g}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=colour,
            )
    if baseline is not None:
        x, acc = _value(baseline, key), test_accuracy(baseline)
        if x is not None and acc is not None:
            ax.plot([x], [100 * acc], "*", color=FLOAT_COLOUR, markersize=11, label="float model")
    if key in ("parameters", "nonzero_parameters", "macs"):
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, color="#e4e7eb")
    ax.legend(fontsize=8)


class _PlotNames:
    """Unique ``pruning-...`` plot names within one report."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, group: Group, what: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", group.label.lower())
        base = f"pruning-{slug.strip('-')}-{what}"
        name, count = base, 1
        while name in self.used:
            count += 1
            name = f"{base}-{count}"
        self.used.add(name)
        return name
