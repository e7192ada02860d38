"""The export stage: chosen variants to deployable files (ONNX, full-int8 TFLite), verified.

Each variant of ``[export] variants`` is handed to every exporter of ``[export] exporters``
that applies to it; each exporter writes into ``<run>/export/<variant>/`` and returns a record
that lands on the variant's row under ``export.<exporter>``. What a TFLite export measured about
the bytes to be flashed (file size, smallest working arena) is also copied to the row's
``deploy`` record, where the report and the firmware backend look for it. An exporter that
raises gives a failed record naming its plugin; the other exports go on.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.errors import KwsError, component_failure
from kwscompress.plugins import PluginManager
from kwscompress.protocols import ExportInputs
from kwscompress.run import Run
from kwscompress.stages.compress import load_variant_model
from kwscompress.stages.features import FeatureSets

REPRESENTATIVE_CLIPS = 300
"""Training clips handed to exporters for calibration (TFLite's representative dataset)."""

DEPLOY_KEYS = ("tflite_bytes", "arena_bytes")
"""What a TFLite export measures that belongs to the row's ``deploy`` record."""


def export_variants(
    pm: PluginManager,
    variant_ids: list[str],
    exporter_names: list[str],
    sets: FeatureSets,
    run: Run,
) -> dict[str, Any]:
    """Export every named variant with every applicable exporter; return the stage summary."""
    rows = {row["id"]: row for row in run.results.get("variants", [])}
    exporters = {name: pm.components("exporter")[name] for name in exporter_names}
    summary: dict[str, Any] = {"variants": {}, "failed": 0}
    for variant_id in variant_ids:
        row = rows.get(variant_id)
        if row is None:
            raise KwsError(
                f"cannot export variant {variant_id!r}: the run has no such variant; "
                f"variants: {', '.join(rows) or 'none (run the compress stage first)'}"
            )
        if row.get("status") != "ok":
            summary["variants"][variant_id] = "skipped: the variant failed"
            continue
        inputs = export_inputs(run.path, row, sets)
        out_dir = run.subdir("export") / variant_id
        records = row.setdefault("export", {})
        for name, registered in exporters.items():
            exporter = registered.component
            if not exporter.applies_to(inputs):
                continue
            try:
                record = exporter.export(inputs, out_dir)
            except Exception as exc:
                summary["failed"] += 1
                error = component_failure(registered.plugin, f"exporter {name!r}", exc)
                record = {"status": "failed", "error": error}
                run.log.error(
                    "export of %s by %s failed:\n%s", variant_id, name, traceback.format_exc()
                )
            record.setdefault("status", "ok")
            record["dir"] = str(out_dir.relative_to(run.path))
            records[name] = record
            deploy = row.setdefault("deploy", {})
            deploy.update({k: record[k] for k in DEPLOY_KEYS if k in record})
            run.save()
        summary["variants"][variant_id] = sorted(records)
    return summary


def export_inputs(run_dir: Path, row: dict[str, Any], sets: FeatureSets) -> ExportInputs:
    """What exporters get for one variant row of the run in ``run_dir``."""
    train = sets.splits["training"].copies[0]
    rng = np.random.default_rng(0)
    chosen = np.sort(
        rng.choice(len(train), size=min(REPRESENTATIVE_CLIPS, len(train)), replace=False)
    )
    test = sets.splits["testing"]
    return ExportInputs(
        variant_id=row["id"],
        model=load_variant_model(run_dir, row["id"]),
        weight_bits=int(row.get("weight_bits", 32)),
        labels=list(sets.labels),
        input_shape=sets.shape,
        representative=np.ascontiguousarray(train[chosen], dtype=np.float32),
        test_features=np.ascontiguousarray(test.features, dtype=np.float32),
        test_labels=np.asarray(test.labels),
    )
