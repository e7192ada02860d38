"""The ``tflite`` exporter: full-int8 ``.tflite``, verified in TFLM on the whole test split.

Two routes lead to the file:

``keras``
    float and pruned ``tiny_conv`` / ``ds_cnn`` / ``tc_ds_cnn``: rebuilt in Keras and converted
    by TensorFlow with the training features as representative dataset
    (:mod:`kwscompress_tflite.keras_route`).
``bridge``
    quantized variants (a model with ``int_graph()``): the integer graph written as it is
    (:mod:`kwscompress_tflite.bridge`), so the file computes what the quantized model computed.

Either way the file takes ``[1, frames * bins]`` int8 (micro_speech feeds ``[1, 1960]``), ends
in an int8 softmax (scale 1/256, zero point -128) and is re-packed with 16-byte aligned
buffers. Verification runs the exact bytes to be flashed through TFLM and through TensorFlow
Lite's reference kernels on every test clip, compares TFLM with the PyTorch model (and, for the
bridge, with the reference interpreter of the IntGraph), and searches the smallest tensor arena
that works.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.errors import KwsError
from kwscompress.intgraph import IntGraph
from kwscompress.protocols import ExportInputs
from kwscompress.run import atomic_open
from kwscompress_tflite import arena, interpreters
from kwscompress_tflite.common import align_buffers, file_stem, plain_copy, torch_outputs

FORBIDDEN_OPS = frozenset({"TRANSPOSE", "SHAPE", "STRIDED_SLICE", "PACK", "DEQUANTIZE", "QUANTIZE"})
"""Ops a clean int8 NHWC graph never needs (layout shuffles, dynamic shapes, float islands)."""

ARENA_PROBE_CLIPS = 3
"""Test clips each arena probe must reproduce exactly."""


class TfliteExporter:
    """Full-int8 TFLite for TFLM: Keras route for float/pruned models, bridge for quantized."""

    name = "tflite"
    description = "full-int8 TFLite (Keras route or IntGraph bridge), verified in TFLM"

    def applies_to(self, inputs: ExportInputs) -> bool:
        """Float models (Keras route) and quantized models that describe their integer graph."""
        if hasattr(inputs.model, "int_graph"):
            return inputs.weight_bits <= 8
        return inputs.weight_bits >= 32

    def export(self, inputs: ExportInputs, out_dir: Path) -> dict[str, Any]:
        """Write ``<variant>.tflite``, verify it in TFLM and return the measurements."""
        started = time.perf_counter()
        graph = None
        if hasattr(inputs.model, "int_graph"):
            from kwscompress_tflite.bridge import int_graph_to_tflite

            route = "bridge"
            graph = inputs.model.int_graph()
            model = int_graph_to_tflite(graph, inputs.variant_id)
            reference_model = inputs.model
        elif inputs.weight_bits < 32:
            raise KwsError(
                f"variant {inputs.variant_id!r}: a {inputs.weight_bits}-bit "
                f"{type(inputs.model).__name__} model has no int_graph() method, so its integer "
                "weights cannot be written to TFLite; quantizers must provide int_graph()"
            )
        else:
            from kwscompress_tflite import keras_route

            route = "keras"
            reference_model = plain_copy(inputs.model)
            keras_model = keras_route.to_keras(reference_model, inputs.variant_id)
            model = align_buffers(keras_route.convert(keras_model, inputs.representative))
        conversion_seconds = time.perf_counter() - started

        facts = interpreters.read_model(model)
        unwanted = sorted(set(facts.ops) & FORBIDDEN_OPS)
        if unwanted or facts.input.dtype != "int8" or facts.output.dtype != "int8":
            raise KwsError(
                f"variant {inputs.variant_id!r}: the {route} route produced ops {facts.ops} with "
                f"{facts.input.dtype} input and {facts.output.dtype} output; a clean full-int8 "
                f"graph has int8 in and out and none of {sorted(FORBIDDEN_OPS)}"
            )
        path = Path(out_dir) / f"{file_stem(inputs.variant_id)}.tflite"
        with atomic_open(path, "wb") as handle:
            handle.write(model)

        record = {
            "files": {"tflite": path.name},
            "route": route,
            "tflite_bytes": len(model),
            **facts.as_dict(),
            "input_layout": f"[1, {int(np.prod(facts.input.shape[1:]))}] int8, "
            "frames x bins row-major (as micro_speech feeds it)",
            "weights": _weight_summary(facts),
            "weight_bits": inputs.weight_bits,
            "stored_weight_bits": 8,
            "conversion_seconds": round(conversion_seconds, 3),
        }
        if inputs.weight_bits < 8:
            record["note"] = (
                f"{inputs.weight_bits}-bit weights are stored as int8 values: TFLM has no "
                "sub-8-bit kernels, so the file (and the flash it takes) is that of an int8 model"
            )
        record.update(_verify(model, facts, inputs, reference_model, graph))
        return record


def _weight_summary(facts: interpreters.ModelFacts) -> dict[str, Any]:
    weights = [w for w in facts.weights if w["role"] == "weights" and w["dtype"] == "int8"]
    biases = [w for w in facts.weights if w["role"] == "bias"]
    return {
        "int8_weight_tensors": len(weights),
        "per_channel_weight_tensors": sum(w["scales"] > 1 for w in weights),
        # TFLM before tflite-micro PR #2673 (Sep 2024) silently uses the first scale only.
        "per_channel_fully_connected": any(
            w["op"] == "FULLY_CONNECTED" and w["scales"] > 1 for w in weights
        ),
        "bias_dtypes": sorted({b["dtype"] for b in biases}),
        "constant_bytes": sum(w["bytes"] for w in facts.weights),
    }


def _verify(
    model: bytes,
    facts: interpreters.ModelFacts,
    inputs: ExportInputs,
    reference_model: Any,
    graph: IntGraph | None,
) -> dict[str, Any]:
    """TFLM vs TensorFlow Lite vs PyTorch (vs the IntGraph) on every test clip, and the arena."""
    verification_started = time.perf_counter()
    features = np.asarray(inputs.test_features, np.float32)
    codes = interpreters.quantize_input(features, facts)

    started = time.perf_counter()
    try:
        tflm = interpreters.run_tflm(model, codes)
    except RuntimeError as exc:  # TFLM reports allocation and kernel failures this way
        raise KwsError(
            f"variant {inputs.variant_id!r}: TFLM cannot run the exported file "
            f"(arena {interpreters.DEFAULT_ARENA_BYTES:,} B): {exc}"
        ) from exc
    tflm_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tflite = interpreters.run_tflite(model, codes, reference_kernels=True)
    optimized = interpreters.run_tflite(model, codes, reference_kernels=False)
    tflite_seconds = time.perf_counter() - started
    started = time.perf_counter()
    torch_top1 = torch_outputs(reference_model, features).argmax(axis=1)
    torch_seconds = time.perf_counter() - started

    top1 = tflm.argmax(axis=1)
    labels = np.asarray(inputs.test_labels)
    started = time.perf_counter()
    search = (
        arena.smallest_arena(
            model,
            codes[:ARENA_PROBE_CLIPS],
            tflm[:ARENA_PROBE_CLIPS],
            interpreters.DEFAULT_ARENA_BYTES,
        )
        if len(codes)
        else {"arena_bytes": None, "probes": 0, "crashes": 0}
    )
    arena_seconds = time.perf_counter() - started
    clips = len(codes)
    checks = {}
    if graph is not None and clips:
        checks["tflm_vs_int_graph"] = _against_int_graph(model, facts, codes, graph)
    return {
        **checks,
        "clips": clips,
        "tflm_vs_tflite": {
            "interpreter": "TensorFlow Lite, reference kernels (no XNNPACK)",
            "outputs_differ": _rows_differ(tflm, tflite),
            "top1_differs": int((top1 != tflite.argmax(axis=1)).sum()),
        },
        "tflm_vs_tflite_optimized": {
            "interpreter": "TensorFlow Lite, built-in optimized kernels (no XNNPACK)",
            "outputs_differ": _rows_differ(tflm, optimized),
            "top1_differs": int((top1 != optimized.argmax(axis=1)).sum()),
        },
        "int8_accuracy": float((top1 == labels).mean()) if clips else None,
        "model_agreement": {
            "compared_with": "float model" if graph is None else "quantized model (PyTorch)",
            "top1_agree": float((top1 == torch_top1).mean()) if clips else None,
            "top1_differs": int((top1 != torch_top1).sum()),
        },
        "arena_bytes": search["arena_bytes"],
        "arena_search": {
            "probes": search["probes"],
            "crashes": search["crashes"],
            "measured_on": "TFLM reference kernels on the 64-bit host",
        },
        "seconds": {
            "tflm": round(tflm_seconds, 3),
            "tflm_per_clip_ms": round(1000 * tflm_seconds / max(clips, 1), 3),
            "tflite": round(tflite_seconds, 3),
            "pytorch": round(torch_seconds, 3),
            "arena_search": round(arena_seconds, 3),
            "verification": round(time.perf_counter() - verification_started, 3),
        },
    }


def _against_int_graph(
    model: bytes, facts: interpreters.ModelFacts, codes: np.ndarray, graph: IntGraph
) -> dict[str, Any]:
    """TFLM against :func:`~kwscompress.intgraph_reference.run_int_graph` on the same codes.

    The logits (the softmax's int8 input) must be equal bit for bit; the reference computes
    the softmax in floating point, TFLM with a fixed-point exponential, so the outputs may
    differ by one.
    """
    from kwscompress.intgraph_reference import trace_int_graph

    *_, logits, outputs = trace_int_graph(graph, codes)
    tflm, tflm_logits = interpreters.run_tflm_keeping(model, codes, facts.logits_index)
    return {
        "logits_differ": _rows_differ(tflm_logits, logits.reshape(len(codes), -1)),
        "outputs_max_abs_diff": int(np.abs(tflm.astype(int) - outputs.astype(int)).max()),
        "top1_differs": int((tflm.argmax(axis=1) != outputs.argmax(axis=1)).sum()),
    }


def _rows_differ(a: np.ndarray, b: np.ndarray) -> int:
    return int((a != b).any(axis=1).sum())
