"""The mcu stage: flash, RAM and Cortex-M latency of every exported int8 variant, no board.

For each variant row with a verified TFLite export, the ``[mcu] runtime`` component builds and
runs the exact ``.tflite`` bytes (the ``native`` runtime: generated C kernels, cross-compiled
for the board's core, sizes read from the ELF, latency from an emulated core) on the test clips,
quantized with the model's own input scale and zero point. Its record lands on the row as
``mcu``. A runtime that raises gives a failed record naming its plugin; the others go on.
"""

from __future__ import annotations

import traceback
from typing import Any

from kwscompress.boards import Board
from kwscompress.errors import component_failure
from kwscompress.intgraph import int8_codes
from kwscompress.plugins import PluginManager
from kwscompress.progress import progress_bar
from kwscompress.run import Run
from kwscompress.stages.features import FeatureSets


def measure_variants(
    pm: PluginManager,
    runtime_name: str,
    run: Run,
    sets: FeatureSets,
    board: Board,
    emulate_clips: int,
) -> dict[str, Any]:
    """Measure every exported variant; return the stage summary."""
    registered = pm.components("mcu_runtime")[runtime_name]
    runtime = registered.component
    summary: dict[str, Any] = {"runtime": runtime_name, "variants": {}, "failed": 0}
    exported = [
        (row, tflite)
        for row in run.results.get("variants", [])
        for tflite in [(row.get("export") or {}).get("tflite") or {}]
        if tflite.get("status") == "ok"
    ]
    features = sets.splits["testing"].features
    with progress_bar(f"Measuring on the MCU ({len(exported)} variants)", len(exported)) as advance:
        for row, tflite in exported:
            path = run.path / tflite["dir"] / tflite["files"]["tflite"]
            quant = tflite["input"]
            inputs = int8_codes(features, quant["scale"], quant["zero_point"]).reshape(
                len(features), -1
            )
            try:
                record = runtime.measure(
                    path,
                    inputs,
                    run.subdir("mcu") / row["id"],
                    weight_bits=min(int(row.get("weight_bits", 8)), 8),
                    clock_hz=board.clock_hz,
                    emulate_clips=emulate_clips,
                )
                record["status"] = "ok"
            except Exception as exc:
                summary["failed"] += 1
                error = component_failure(registered.plugin, f"mcu runtime {runtime_name!r}", exc)
                record = {"status": "failed", "error": error}
                run.log.error("mcu of %s failed:\n%s", row["id"], traceback.format_exc())
            row["mcu"] = record
            summary["variants"][row["id"]] = record["status"]
            run.save()
            failed = summary["failed"]
            advance(status=f"{failed} failed" if failed else None)
    return summary
