"""The estimate stage: what a model costs on a board, before anything is exported.

:func:`estimate_model` asks an estimator component (``fvcore`` by default) for raw per-layer
counts, then adds FLOPs under a named convention, weight bytes at each bit width, activation
memory, the fit on a board profile (:mod:`kwscompress.boards`) and a throughput line. The
result is ``results["estimate"]``, labelled ``"estimate"``: later stages measure the same
quantities (TFLite size, TFLM arena, firmware size) and the report shows both. Conventions and
definitions are in :doc:`/estimation`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kwscompress.boards import DEFAULT_BOARD, Board, boards, get_board
from kwscompress.config import ModelConfig
from kwscompress.errors import KwsError

if TYPE_CHECKING:
    from torch import nn

    from kwscompress.protocols import Estimator

DEFAULT_BITS = (32, 8)
"""Bit widths estimated when none are given: the float model and the int8 model."""

DEFAULT_FLOPS_PER_SECOND = 3.125e12
"""The rate of the reference report's throughput line: DeepSpeech2's 50 TFLOP/s over 16 GPUs."""

FEATURE_SHAPE = (49, 40)
"""Features the ``estimate`` command builds models for (frames, bins): 1 s of micro features."""

NUM_CLASSES = 4
"""Classes the ``estimate`` command builds models for: silence, unknown, yes, no."""

FlopRule = Callable[[Mapping[str, Any]], int]

FLOP_CONVENTIONS: dict[str, tuple[str, FlopRule]] = {
    "2mac+bias": (
        "FLOPs = 2 x MACs + one bias add per output element of conv/linear layers + fvcore's count "
        "of other operators (the course tests' convention)",
        lambda layer: 2 * layer["macs"] + layer["bias_elements"] + layer["other_ops"],
    ),
    "2mac+channel_bias": (
        "FLOPs = 2 x MACs + one bias add per output channel of conv layers (per output element of "
        "linear layers) + fvcore's count of other operators",
        lambda layer: 2 * layer["macs"] + layer["bias_channels"] + layer["other_ops"],
    ),
    "2mac": (
        "FLOPs = 2 x MACs + fvcore's count of other operators (bias adds not counted)",
        lambda layer: 2 * layer["macs"] + layer["other_ops"],
    ),
    "mac": (
        "FLOPs = MACs + fvcore's count of other operators (one multiply-add is one FLOP, "
        "as fvcore counts)",
        lambda layer: layer["macs"] + layer["other_ops"],
    ),
}
"""FLOP conventions by name: a sentence naming it and the rule applied to one layer's counts."""

DEFAULT_FLOP_CONVENTION = "2mac+bias"

TIGHT_PERCENT = 80.0
"""Above this share of flash or RAM a fitting model's verdict warns that little room is left."""

SIMPLE_FORWARD_DEFINITION = "(input + output elements) x 4 bytes"

NOTES = (
    "Estimates of one batch-1 forward pass from static analysis; later stages measure them.",
    "Flash counts the weights only (N-bit weights, 32-bit biases): code, runtime and model "
    "format overhead are not included (measured at export and deploy).",
    "RAM counts activations only (peak live bytes of a sequential run): the TFLM arena's "
    "scratch and bookkeeping and the application's own RAM are measured at deploy.",
)


def estimate_model(
    model: nn.Module,
    input_shape: Iterable[int],
    board: str | Board = DEFAULT_BOARD,
    bits: Iterable[int] = DEFAULT_BITS,
    estimator: str | Estimator = "fvcore",
    *,
    model_name: str | None = None,
    flop_convention: str = DEFAULT_FLOP_CONVENTION,
    flops_per_second: float = DEFAULT_FLOPS_PER_SECOND,
) -> dict[str, Any]:
    """Estimate the costs of ``model`` and its fit on ``board``: the ``results["estimate"]`` dict.

    :param model: the float model; it is run once in eval mode and its mode restored.
    :param input_shape: shape of one input tensor, batch first (``(1, 49, 40)``).
    :param board: a board name from :func:`kwscompress.boards.boards` or a :class:`Board`.
    :param bits: weight bit widths to check the fit for; activations are int8 for 8 bits or
        fewer, int16 up to 16 bits, float32 above.
    :param estimator: an estimator component or the name of a registered one.
    :param model_name: name recorded in the result (default: the model's class name).
    :param flop_convention: a key of :data:`FLOP_CONVENTIONS`.
    :param flops_per_second: compute rate of the throughput line.
    """
    shape = tuple(int(n) for n in input_shape)
    if not shape or min(shape) < 1:
        raise KwsError(f"input shape {shape} must have at least one dimension, all positive")
    widths = _check_bits(bits)
    if flop_convention not in FLOP_CONVENTIONS:
        raise KwsError(
            f"unknown FLOP convention {flop_convention!r}; valid names: "
            + ", ".join(FLOP_CONVENTIONS)
        )
    if not flops_per_second > 0:
        raise KwsError(f"compute rate must be positive, got {flops_per_second} FLOP/s")
    profile = get_board(board) if isinstance(board, str) else board
    if isinstance(estimator, str):
        from kwscompress.plugins import get_plugin_manager

        estimator = get_plugin_manager().component("estimator", estimator)

    counts = estimator.estimate(model, shape)
    sentence, rule = FLOP_CONVENTIONS[flop_convention]
    layers = [{**layer, "flops": int(rule(layer))} for layer in counts["layers"]]
    total_flops = int(rule(counts["total"] | _bias_totals(counts["layers"])))
    memory = counts["memory"]
    peak = memory["peak_live_elements"]
    simple = (memory["input_elements"] + memory["output_elements"]) * 4
    return {
        "label": "estimate",
        "estimator": counts.get("estimator", getattr(estimator, "name", "")),
        "model": model_name or type(model).__name__,
        "input_shape": list(shape),
        "flop_convention": sentence,
        "flop_convention_name": flop_convention,
        "layers": layers,
        "total": {**counts["total"], "flops": total_flops},
        "memory": {
            "peak_activation_bytes": {"fp32": peak * 4, "int8": peak},
            "peak_activation_elements": peak,
            "peak_at_layer": memory["peak_at_layer"],
            "simple_forward_bytes": simple,
            "simple_forward_definition": SIMPLE_FORWARD_DEFINITION,
            "simple_forward_ram_percent": percent(simple, profile.ram_bytes),
        },
        "board": profile.as_dict(),
        "fit": [_fit(model, width, peak, profile) for width in widths],
        "throughput": {
            "flops_per_second": flops_per_second,
            "flops_per_pass": total_flops,
            "passes_per_second": flops_per_second / total_flops if total_flops else 0.0,
            "line": throughput_line(total_flops, flops_per_second),
        },
        "notes": list(NOTES),
    }


def weight_bytes(model: nn.Module, bits: int) -> int:
    """Bytes of ``model``'s parameters with biases at 32 bits and every other tensor at ``bits``.

    Each tensor is rounded up to whole bytes; shared parameters count once.
    """
    total = 0
    for name, parameter in model.named_parameters():
        width = 32 if name.rsplit(".", 1)[-1] == "bias" else bits
        total += math.ceil(parameter.numel() * width / 8)
    return total


def activation_bytes(bits: int) -> int:
    """Bytes per activation element of a model whose weights have ``bits`` bits."""
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def percent(part: int, whole: int) -> float:
    """``part`` as a percentage of ``whole``, to 2 decimals (66,608 B of 1 MiB is 6.35)."""
    return round(part / whole * 100, 2)


def throughput_line(flops: int, flops_per_second: float) -> str:
    """One line: forward passes per second at a compute rate, an upper bound that ignores memory."""
    if flops <= 0:
        return f"the model has no counted FLOPs; no throughput at {_si(flops_per_second)}FLOP/s"
    passes = flops_per_second / flops
    return (
        f"{flops:,} FLOPs per pass at {_si(flops_per_second)}FLOP/s -> "
        f"{passes:,.0f} passes/s (compute bound)"
    )


def format_estimate(result: Mapping[str, Any]) -> str:
    """Render a ``results["estimate"]`` dict as plain-text tables."""
    from rich import box
    from rich.table import Table

    memory = result["memory"]
    peak = memory["peak_activation_bytes"]
    board = result["board"]
    total = result["total"]
    layers = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("layer", "type", "output shape", "params", "MACs", "FLOPs", "live elements"):
        layers.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for layer in result["layers"]:
        layers.add_row(
            layer["name"],
            layer["type"],
            "x".join(str(n) for n in layer["output_shape"]),
            *(f"{layer[key]:,}" for key in ("parameters", "macs", "flops", "live_elements")),
        )
    layers.add_section()
    layers.add_row("total", "", "", *(f"{total[k]:,}" for k in ("parameters", "macs", "flops")))
    fit = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("bits", "flash B", "flash %", "RAM B", "RAM %", "verdict"):
        fit.add_column(column, justify="left" if column == "verdict" else "right")
    for row in result["fit"]:
        fit.add_row(
            str(row["bits"]),
            f"{row['flash_bytes']:,}",
            f"{row['flash_percent']:.2f}",
            f"{row['ram_bytes']:,}",
            f"{row['ram_percent']:.2f}",
            row["verdict"],
        )
    parts = [
        f"Estimate of {result['model']} ({result['estimator']}), input {result['input_shape']}",
        _render(layers),
        "",
        f"{result['flop_convention']}.",
        f"Peak live activations: {peak['fp32']:,} B fp32, {peak['int8']:,} B int8 "
        f"(at layer {memory['peak_at_layer']}).",
        f"Simple forward memory, {memory['simple_forward_definition']}: "
        f"{memory['simple_forward_bytes']:,} B ({memory['simple_forward_ram_percent']:.2f} % "
        "of RAM).",
        f"Board {board['name']}: {board['title']}, {board['core']}, "
        f"{board['clock_hz'] / 1e6:g} MHz, "
        f"flash {board.get('usable_flash_bytes', board['flash_bytes']):,} B usable, "
        f"RAM {board['ram_bytes']:,} B.",
        "",
        _render(fit),
        "",
        f"Throughput: {result['throughput']['line']}.",
        *result["notes"],
    ]
    return "\n".join(parts)


def configure_estimate_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``kwscompress estimate`` to ``parser``."""
    default = ModelConfig().name
    parser.add_argument("--model", default=default, help=f"model name (default: {default})")
    parser.add_argument(
        "--board",
        default=DEFAULT_BOARD,
        help=f"board profile: {', '.join(boards())} (default: {DEFAULT_BOARD})",
    )
    parser.add_argument(
        "--bits",
        type=int,
        action="append",
        help="weight bit width to check; repeat for several (default: 32 and 8)",
    )
    parser.add_argument(
        "--estimator", default="fvcore", help="estimator component (default: fvcore)"
    )
    parser.add_argument(
        "--flops",
        dest="flop_convention",
        default=DEFAULT_FLOP_CONVENTION,
        choices=list(FLOP_CONVENTIONS),
        help=f"FLOP convention (default: {DEFAULT_FLOP_CONVENTION})",
    )
    parser.add_argument(
        "--flops-per-second",
        type=float,
        default=DEFAULT_FLOPS_PER_SECOND,
        help="compute rate of the throughput line (default: 3.125e12, the reference report's)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def estimate_command(args: argparse.Namespace) -> int:
    """Run ``kwscompress estimate``: build the model, estimate it, print a table or JSON."""
    from kwscompress.plugins import get_plugin_manager

    pm = get_plugin_manager()
    model = pm.component("model", args.model).build(FEATURE_SHAPE, num_classes=NUM_CLASSES)
    result = estimate_model(
        model,
        (1, *FEATURE_SHAPE),
        board=args.board,
        bits=args.bits or DEFAULT_BITS,
        estimator=pm.component("estimator", args.estimator),
        model_name=args.model,
        flop_convention=args.flop_convention,
        flops_per_second=args.flops_per_second,
    )
    print(json.dumps(result, indent=2) if args.json else format_estimate(result))
    return 0


def _check_bits(bits: Iterable[int]) -> list[int]:
    widths = list(dict.fromkeys(int(b) for b in bits))
    if not widths or any(not 1 <= b <= 32 for b in widths):
        raise KwsError(f"bit widths must be between 1 and 32, got {widths}")
    return widths


def _bias_totals(layers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    layers = list(layers)
    return {
        "bias_elements": sum(layer["bias_elements"] for layer in layers),
        "bias_channels": sum(layer["bias_channels"] for layer in layers),
    }


def _fit(model: nn.Module, bits: int, peak_elements: int, board: Board) -> dict[str, Any]:
    flash = weight_bytes(model, bits)
    ram = peak_elements * activation_bytes(bits)
    too_big = [
        f"{what} {used:,} B > {capacity:,} B"
        for what, used, capacity in (
            ("flash", flash, board.usable_flash_bytes),
            ("RAM", ram, board.ram_bytes),
        )
        if used > capacity
    ]
    flash_percent = percent(flash, board.usable_flash_bytes)
    ram_percent = percent(ram, board.ram_bytes)
    verdict = "does not fit: " + "; ".join(too_big) if too_big else "fits"
    tight = [
        f"{what} {share:.2f} %"
        for what, share in (("flash", flash_percent), ("RAM", ram_percent))
        if TIGHT_PERCENT < share <= 100
    ]
    if tight and not too_big:
        verdict += f" (tight: {', '.join(tight)}; code, runtime and application need room too)"
    return {
        "bits": bits,
        "weight_bytes": flash,
        "flash_bytes": flash,
        "flash_percent": flash_percent,
        "ram_bytes": ram,
        "ram_percent": ram_percent,
        "fits": not too_big,
        "verdict": verdict,
    }


def _render(table: Any) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=200, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).strip("\n")


def _si(value: float) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g} {prefix}"
    return f"{value:g} "
