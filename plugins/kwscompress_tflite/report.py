"""The "Deployment" report section: what was exported, measured beside what was estimated."""

from __future__ import annotations

from typing import Any

from kwscompress.protocols import SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_percent
from kwscompress.run import Run


class DeploymentSection:
    """Per exported variant: file size and arena (measured) against the estimate and the board,
    TFLM's agreement with TensorFlow Lite and with the PyTorch model, the ops, the ONNX check
    and where the sketch is."""

    name = "deployment"
    description = "exported files: measured flash and arena vs estimate, TFLM checks, sketches"
    title = "Deployment"
    order = 90

    def render(self, run: Run) -> SectionContent | None:
        """Tables from the ``export`` and ``deploy`` records of ``results["variants"]``."""
        results = run.results
        rows = [r for r in results.get("variants") or [] if r.get("export")]
        if not rows:
            return None
        estimate = results.get("estimate") or {}
        board = estimate.get("board") or {}
        flash = board.get("sketch_flash_bytes") or board.get("flash_bytes")
        ram = board.get("ram_bytes")
        int8_fit = next((f for f in estimate.get("fit") or [] if f.get("bits") == 8), {})
        peak = ((estimate.get("memory") or {}).get("peak_activation_bytes") or {}).get("int8")

        peak_cell = (
            Cell(fmt_bytes(peak), "peak, trained model at int8")
            if peak is not None
            else Cell(MISSING, kind="muted")
        )
        table_rows, details = [], []
        for row in rows:
            tflite = row["export"].get("tflite") or {}
            onnx = row["export"].get("onnx") or {}
            deploy = row.get("deploy") or {}
            size = deploy.get("tflite_bytes") or tflite.get("tflite_bytes")
            arena = deploy.get("arena_bytes") or tflite.get("arena_bytes")
            if row.get("id") == "float" and int8_fit.get("weight_bytes") is not None:
                weights = Cell(fmt_bytes(int8_fit["weight_bytes"]), "at 8 bits")
            elif row.get("weight_bytes") is not None:
                weights = Cell(fmt_bytes(row["weight_bytes"]), f"at {row.get('weight_bits')} bits")
            else:
                weights = Cell(MISSING, kind="muted")
            table_rows.append(
                [
                    row.get("id", MISSING),
                    tflite.get("route", MISSING),
                    _against(size, flash),
                    weights,
                    _against(arena, ram),
                    peak_cell,
                    _tflm_cell(tflite),
                    _reference_cell(tflite),
                    fmt_percent(tflite.get("int8_accuracy")),
                    _agreement_cell(tflite),
                    _onnx_cell(onnx),
                ]
            )
            details.append(_details(row, tflite, onnx, deploy))
        board_name = board.get("title") or board.get("name") or "the board"
        parts = [
            blocks.paragraph(
                "Every exported variant: the size of the exact .tflite bytes to be flashed and "
                "the smallest TFLM tensor arena that ran it (found by bisection), beside the "
                f"estimates made before export. Percentages are of {board_name}'s usable "
                f"sketch flash ({fmt_bytes(flash)}) and RAM ({fmt_bytes(ram)}). The whole test "
                "split ran through TFLM and through TensorFlow Lite's reference kernels; the "
                "counts are clips whose int8 outputs (and top-1 class) differ, 0 meaning the "
                "host predicts exactly what the device computes."
            ),
            blocks.table(
                [
                    "variant",
                    "route",
                    ".tflite (measured)",
                    "weights (estimate)",
                    "arena (measured)",
                    "activations (estimate)",
                    "TFLM vs TFLite",
                    "TFLM vs IntGraph",
                    "int8 accuracy",
                    "agrees with model",
                    "ONNX",
                ],
                table_rows,
                caption="Exported variants: measured beside estimated.",
            ),
            blocks.note(
                "Sub-8-bit variants are stored as int8 in TFLite: TFLM has no 2- or 4-bit "
                "kernels, so their .tflite file and flash are those of an int8 model; only their "
                "accuracy reflects the lower width. The arena was measured with TFLM's reference "
                "kernels on the 64-bit host; the board's optimized (CMSIS-NN) kernels may ask "
                "for a little scratch memory more, while its 32-bit pointers need less."
            ),
            _tflite_difference_note(rows),
            _per_channel_fc_note(rows),
            *details,
        ]
        return blocks.combine(*parts)


def _tflite_difference_note(rows: list[dict[str, Any]]) -> SectionContent | None:
    differ = [
        str(row.get("id"))
        for row in rows
        if ((row["export"].get("tflite") or {}).get("tflm_vs_tflite") or {}).get("outputs_differ")
    ]
    if not differ:
        return None
    return blocks.note(
        f"TFLM and TensorFlow Lite differ on some clips of {', '.join(differ)}. The known cause "
        "is FULLY_CONNECTED with one weight scale: TFLM derives its requantization multiplier "
        "from the float product of input and weight scale, TensorFlow Lite from the double "
        "product, so a logit on a rounding boundary can land one LSB apart. The board runs "
        "TFLM's arithmetic; for bridge variants the IntGraph column checks it bit for bit.",
    )


def _per_channel_fc_note(rows: list[dict[str, Any]]) -> SectionContent | None:
    ids = [
        str(row.get("id"))
        for row in rows
        if ((row["export"].get("tflite") or {}).get("weights") or {}).get(
            "per_channel_fully_connected"
        )
    ]
    if not ids:
        return None
    return blocks.note(
        f"{', '.join(ids)}: fully connected weights with one scale per output. TFLM runs them "
        "correctly only since tflite-micro PR #2673 (September 2024); older builds, such as the "
        "Arduino_TensorFlowLite library, silently use the first scale for every output.",
        "warn",
    )


def _against(value: Any, capacity: Any) -> Any:
    if value is None:
        return Cell(blocks.NOT_MEASURED, kind="muted")
    share = f"{100 * value / capacity:.2f} % of the board" if capacity else ""
    return Cell(fmt_bytes(value), share)


def _tflm_cell(tflite: dict[str, Any]) -> Any:
    check = tflite.get("tflm_vs_tflite")
    if not check:
        return Cell(MISSING, kind="muted")
    differ, top1 = check.get("outputs_differ"), check.get("top1_differs")
    kind = "good" if differ == 0 and top1 == 0 else "bad"
    return Cell(f"{differ} / {top1} differ", f"of {tflite.get('clips')} clips", kind)


def _reference_cell(tflite: dict[str, Any]) -> Any:
    check = tflite.get("tflm_vs_int_graph")
    if not check:
        return Cell(MISSING, kind="muted")
    differ = check.get("logits_differ")
    return Cell(
        f"{differ} logits differ",
        f"outputs within {check.get('outputs_max_abs_diff')} LSB",
        "good" if differ == 0 else "bad",
    )


def _agreement_cell(tflite: dict[str, Any]) -> Any:
    agreement = tflite.get("model_agreement") or {}
    if agreement.get("top1_agree") is None:
        return Cell(MISSING, kind="muted")
    return Cell(fmt_percent(agreement["top1_agree"], 2), f"top-1, {agreement['compared_with']}")


def _onnx_cell(onnx: dict[str, Any]) -> Any:
    if not onnx:
        return Cell(MISSING, kind="muted")
    kind = "good" if onnx.get("agrees") else "bad"
    return Cell(
        f"checker {onnx.get('checker', MISSING)}",
        f"max |diff| {onnx.get('max_abs_diff', float('nan')):.1e}, opset {onnx.get('opset')}",
        kind,
    )


def _details(
    row: dict[str, Any], tflite: dict[str, Any], onnx: dict[str, Any], deploy: dict[str, Any]
) -> SectionContent:
    items: list[tuple[str, Any]] = []
    if tflite:
        quant = tflite.get("input") or {}
        seconds = tflite.get("seconds") or {}
        items += [
            ("file", tflite.get("files", {}).get("tflite")),
            ("ops", ", ".join(tflite.get("ops") or [])),
            (
                "input",
                f"{tflite.get('input_layout', '')}; scale {quant.get('scale', 0):.6g}, "
                f"zero point {quant.get('zero_point')}",
            ),
            ("weights", _weights_text(tflite)),
            ("TFLite optimized kernels", _differ_text(tflite.get("tflm_vs_tflite_optimized"))),
            (
                "timings",
                f"conversion {tflite.get('conversion_seconds', 0):.2f} s, TFLM "
                f"{seconds.get('tflm', 0):.2f} s ({seconds.get('tflm_per_clip_ms', 0):.2f} ms per "
                f"clip), arena search {seconds.get('arena_search', 0):.2f} s, verification in "
                f"all {seconds.get('verification', 0):.2f} s",
            ),
            ("note", tflite.get("note")),
        ]
    if onnx:
        items.append(
            (
                "ONNX file",
                f"{onnx.get('files', {}).get('onnx')} ({fmt_bytes(onnx.get('onnx_bytes'))})",
            )
        )
    items.append(("sketch", deploy.get("firmware") or "not rendered"))
    return blocks.details(f"{row.get('id')}: files and checks", blocks.definitions(items))


def _weights_text(tflite: dict[str, Any]) -> str:
    bits = tflite.get("weight_bits")
    text = (
        "float model, quantized to int8 by the converter"
        if bits is not None and bits > 8
        else f"{bits}-bit, stored as int8"
    )
    weights = tflite.get("weights")
    if weights:
        text += (
            f" ({weights['per_channel_weight_tensors']} of {weights['int8_weight_tensors']} "
            f"weight tensors per channel, {fmt_bytes(weights['constant_bytes'])} of constants)"
        )
    return text


def _differ_text(check: dict[str, Any] | None) -> str | None:
    if not check:
        return None
    return (
        f"{check.get('outputs_differ')} clips differ from TFLM by at least one LSB, "
        f"{check.get('top1_differs')} in top-1 (information: the device runs TFLM's kernels)"
    )
