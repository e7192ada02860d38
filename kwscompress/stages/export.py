"""The export stage: chosen variants to deployable files (ONNX, full-int8 TFLite), verified.

Each variant of ``[export] variants`` is handed to every exporter of ``[export] exporters``
that applies to it; each exporter writes into ``<run>/export/<variant>/`` and returns a record
that lands on the variant's row under ``export.<exporter>``. What a TFLite export measured about
the bytes to be flashed (file size, smallest working arena) is also copied to the row's
``deploy`` record, where the report and the firmware backend look for it. An exporter that
raises gives a failed record naming its plugin; the other exports go on.

The variants are shared between this process and ``[export] workers - 1`` spawned helpers
(:mod:`kwscompress.spawned`); the stage summary's ``by_helpers`` lists those a helper
exported. Files and records do not depend on where a variant was exported.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.errors import KwsError, component_failure
from kwscompress.plugins import PluginManager
from kwscompress.progress import progress_bar
from kwscompress.protocols import ExportInputs
from kwscompress.run import Run
from kwscompress.spawned import run_alongside_spawned
from kwscompress.stages.compress import load_variant_model
from kwscompress.stages.features import FeatureSets
from kwscompress.tf_import import import_tensorflow

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
    workers: int = 1,
) -> dict[str, Any]:
    """Export every named variant with every applicable exporter; return the stage summary.

    With ``workers`` above 1 the variants are shared between this process and ``workers - 1``
    spawned helpers (:func:`~kwscompress.spawned.run_alongside_spawned`); the files and
    records are the same either way.
    """
    rows = {row["id"]: row for row in run.results.get("variants", [])}
    exporters = [
        (name, registered.plugin, registered.component)
        for name in exporter_names
        for registered in [pm.components("exporter")[name]]
    ]
    summary: dict[str, Any] = {"variants": {}, "failed": 0, "workers": workers, "by_helpers": []}
    jobs: list[ExportJob] = []
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
        applying = [entry for entry in exporters if entry[2].applies_to(inputs)]
        jobs.append(ExportJob(inputs, run.subdir("export") / variant_id, applying))
        summary["variants"][variant_id] = []

    def keep(index: int, outcome: tuple[int, dict[str, ExporterOutcome]]) -> None:
        job = jobs[index]
        process, outcomes = outcome
        if process != os.getpid():
            summary["by_helpers"].append(job.inputs.variant_id)
        row = rows[job.inputs.variant_id]
        records = row.setdefault("export", {})
        for name, (record, failure) in outcomes.items():
            if failure is not None:
                summary["failed"] += 1
                run.log.error(
                    "export of %s by %s failed:\n%s", job.inputs.variant_id, name, failure
                )
            record["dir"] = str(job.out_dir.relative_to(run.path))
            records[name] = record
            deploy = row.setdefault("deploy", {})
            deploy.update({k: record[k] for k in DEPLOY_KEYS if k in record})
        summary["variants"][job.inputs.variant_id] = sorted(records)
        run.save()
        failed = summary["failed"]
        advance(status=f"{failed} failed" if failed else None)

    with progress_bar(f"Exporting ({len(jobs)} variants)", len(jobs)) as advance:
        run_alongside_spawned(export_one, jobs, workers - 1, keep, prepare=_import_tensorflow)
    return summary


@dataclass
class ExportJob:
    """One variant for its applicable exporters (each ``(name, plugin, component)``)."""

    inputs: ExportInputs
    out_dir: Path
    exporters: list[tuple[str, str, Any]]


def _import_tensorflow() -> None:
    # What a helper spends most of its start on; done before it takes a variant.
    import_tensorflow()


ExporterOutcome = tuple[dict[str, Any], str | None]
"""An exporter's record and, when it raised, the traceback to log."""


def export_one(job: ExportJob) -> tuple[int, dict[str, ExporterOutcome]]:
    """Run a job's exporters (in this process or a helper) and name the process: an exporter
    that raises gives a failed record naming its plugin, and the others go on."""
    outcomes: dict[str, ExporterOutcome] = {}
    for name, plugin, exporter in job.exporters:
        failure = None
        try:
            record = exporter.export(job.inputs, job.out_dir)
        except Exception as exc:
            failure = traceback.format_exc()
            record = {
                "status": "failed",
                "error": component_failure(plugin, f"exporter {name!r}", exc),
            }
        record.setdefault("status", "ok")
        outcomes[name] = (record, failure)
    return os.getpid(), outcomes


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
