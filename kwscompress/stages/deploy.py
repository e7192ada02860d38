"""The deploy stage: firmware rendered around an exported, verified TFLite model.

For each variant of ``[deploy] variants``, the backend of ``[deploy] backend`` renders a project
into ``<run>/firmware/<variant>/`` (or a folder the user names) from the exact ``.tflite`` bytes
the export stage verified in TFLM, the labels in training order, the feature settings the model
was trained with, the measured arena and the ``[recognizer]`` settings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kwscompress.config import RecognizerConfig
from kwscompress.errors import KwsError
from kwscompress.plugins import PluginManager
from kwscompress.protocols import FirmwareInputs
from kwscompress.recognizer import RecognizerSettings
from kwscompress.stream.tuning import quietest_keeping


def firmware_inputs(
    results: dict[str, Any],
    run_dir: Path,
    variant_id: str,
    recognizer: RecognizerConfig,
    threshold: int | None = None,
    window_ms: int | None = None,
) -> FirmwareInputs:
    """Collect what a backend needs for ``variant_id`` from a run's ``results.json``.

    The recognizer is :func:`recognizer_settings`' choice, with ``threshold`` and ``window_ms``
    instead when given (:func:`override_recognizer`); ``recognizer_source`` says where it came
    from.

    :raises KwsError: the variant does not exist, has no verified TFLite export, or an override
        is out of range.
    """
    rows = {row.get("id"): row for row in results.get("variants") or []}
    row = rows.get(variant_id)
    if row is None:
        raise KwsError(
            f"variant {variant_id!r} is not in {run_dir / 'results.json'}; variants: "
            f"{', '.join(str(k) for k in rows) or 'none'}"
        )
    tflite = (row.get("export") or {}).get("tflite") or {}
    if tflite.get("status") != "ok" or "tflite" not in (tflite.get("files") or {}):
        exported = [
            r
            for r, v in rows.items()
            if ((v.get("export") or {}).get("tflite") or {}).get("status") == "ok"
        ]
        raise KwsError(
            f"variant {variant_id!r} has no verified TFLite export; add it to [export] variants "
            f"(exported: {', '.join(str(e) for e in exported) or 'none'})"
        )
    settings, source = override_recognizer(
        *recognizer_settings(results, recognizer, variant_id), threshold, window_ms
    )
    features = dict((results.get("features") or {}).get("settings") or {})
    features.setdefault("name", (results.get("features") or {}).get("extractor"))
    sample_rate = ((results.get("config") or {}).get("data") or {}).get("sample_rate", 16000)
    features.setdefault("sample_rate", sample_rate)
    return FirmwareInputs(
        variant_id=variant_id,
        tflite_path=run_dir / tflite["dir"] / tflite["files"]["tflite"],
        labels=list((results.get("evaluate") or {}).get("labels") or results["data"]["labels"]),
        features=features,
        arena_bytes=(row.get("deploy") or {}).get("arena_bytes"),
        recognizer=settings,
        recognizer_source=source,
    )


USABLE_FALSE_REJECT_RATE = 0.5
"""Recognizer settings that miss more keywords than this on the validation stream are not
rendered into firmware (see :func:`recognizer_settings`)."""


def recognizer_settings(
    results: dict[str, Any], configured: RecognizerConfig, variant_id: str | None = None
) -> tuple[dict[str, Any], str]:
    """The recognizer settings to render, and where they come from.

    The settings tuned on the validation stream for the target false-accept rate, when they
    keep at least half of the keywords on that stream: the variant's own (its row's ``stream``
    record, made when the deploy stage streams it) or else the trained model's (the stream
    stage's). When they miss more, the target is out of the model's reach and a device that
    seldom answers is no use: the threshold of the same averaging window with the fewest false
    accepts per hour among those that keep at least half of the validation stream's keywords
    (its DET). Otherwise the ``[recognizer]`` config.
    """
    rows = {row.get("id"): row for row in results.get("variants") or []}
    own = (rows.get(variant_id) or {}).get("stream")
    stream = own or results.get("stream") or {}
    whose = f"variant {variant_id}'s" if own else "the trained model's"
    chosen = stream.get("validation_at_chosen") or {}
    miss = chosen.get("false_reject_rate")
    if not (stream.get("tuned") and stream.get("recognizer") and miss is not None):
        return dataclasses.asdict(configured), "[recognizer] config"
    if miss <= USABLE_FALSE_REJECT_RATE:
        return dict(stream["recognizer"]), f"tuned on {whose} validation stream"
    det = ((stream.get("streams") or {}).get("validation") or {}).get("det") or []
    best = quietest_keeping(det, USABLE_FALSE_REJECT_RATE)
    if best is not None:
        threshold = int(best["threshold"])
        rate, misses = best["false_accepts_per_hour"] or 0.0, best["false_reject_rate"]
        return {**stream["recognizer"], "detection_threshold": threshold}, (
            f"{whose} validation stream: threshold {threshold}, the fewest false accepts "
            f"({rate:.1f} per hour) while missing at most half of the keywords ({misses:.0%}); "
            f"the threshold tuned for the target missed {miss:.0%}"
        )
    return dataclasses.asdict(configured), (
        f"[recognizer] config (the tuned threshold missed {miss:.0%} of the validation "
        "stream's keywords, and no threshold kept half of them)"
    )


def override_recognizer(
    settings: dict[str, Any], source: str, threshold: int | None, window_ms: int | None
) -> tuple[dict[str, Any], str]:
    """``settings`` (from :func:`recognizer_settings`) with the detection threshold and the
    averaging window given instead (None keeps each), checked, and their source.

    :raises KwsError: a value out of range.
    """
    given = (("detection_threshold", threshold), ("average_window_ms", window_ms))
    overrides = {key: value for key, value in given if value is not None}
    if not overrides:
        return dict(settings), source
    merged = RecognizerSettings.from_any({**settings, **overrides}).as_dict()
    return merged, f"{source}, with {', '.join(f'{k} = {v}' for k, v in overrides.items())}"


def render_firmware(
    pm: PluginManager,
    backend_name: str,
    inputs: FirmwareInputs,
    out_dir: Path,
    **options: Any,
) -> dict[str, Path]:
    """Render the project with the named backend into ``out_dir`` (``options`` go to it)."""
    backend = pm.component("backend", backend_name)
    return backend.render(inputs, out_dir, **options)


def firmware_record(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """What the row's ``deploy`` record keeps of a rendering: where it is, and the facts file
    (arena, ops, input quantization) a backend may write beside it."""
    record: dict[str, Any] = {"firmware": str(out_dir)}
    facts = files.get("facts")
    if facts is not None and Path(facts).is_file():
        record["firmware_facts"] = json.loads(Path(facts).read_text("utf-8"))
    return record
