"""The ``onnx`` exporter: a float or pruned model as ONNX, checked and compared in onnxruntime."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwscompress.errors import KwsError
from kwscompress.protocols import ExportInputs
from kwscompress.run import atomic_path
from kwscompress_tflite.common import file_stem, plain_copy, torch_outputs

STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
"""Node metadata the torch exporter writes and this exporter leaves out."""

TOLERANCE = 1e-5
"""Largest difference between onnxruntime's and PyTorch's logits that counts as agreement."""


class OnnxExporter:
    """Exports float and pruned models with ``torch.onnx.export`` (the torch.export route).

    The file takes ``features`` ``[batch, frames, bins]`` float32 (the batch is dynamic) and
    returns ``logits`` ``[batch, classes]``. Pruning masks are folded into the weights first.
    The record says whether ``onnx.checker`` accepts the file and how far onnxruntime's logits
    on the test features are from PyTorch's.
    """

    name = "onnx"
    description = "ONNX (torch.onnx, dynamic batch), onnx.checker and onnxruntime vs PyTorch"

    def applies_to(self, inputs: ExportInputs) -> bool:
        """Float and pruned models; fake-quantized ones go to TFLite through the bridge."""
        return inputs.weight_bits >= 32 and not hasattr(inputs.model, "int_graph")

    def export(self, inputs: ExportInputs, out_dir: Path) -> dict[str, Any]:
        """Write ``<variant>.onnx`` and return the check results."""
        import onnx
        import onnxruntime

        started = time.perf_counter()
        model = plain_copy(inputs.model)
        features = np.ascontiguousarray(inputs.test_features, np.float32)
        example = torch.from_numpy(features[:1])
        try:
            with _quiet_exporter_logs():
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    verbose=False,
                    input_names=["features"],
                    output_names=["logits"],
                    dynamic_shapes={"features": {0: torch.export.Dim("batch")}},
                )
        except Exception as exc:  # torch.export names the unsupported construct
            raise KwsError(
                f"variant {inputs.variant_id!r}: torch.onnx.export cannot export the "
                f"{type(inputs.model).__name__} model: {str(exc).splitlines()[0]}"
            ) from exc
        for node in program.model.graph:
            # Each node's Python stack trace names this machine's source files: the file would
            # carry the user's paths and differ between checkouts of the same code.
            node.metadata_props.pop(STACK_TRACE_KEY, None)
        path = Path(out_dir) / f"{file_stem(inputs.variant_id)}.onnx"
        with atomic_path(path) as tmp:
            program.save(tmp, external_data=False)
        export_seconds = time.perf_counter() - started

        started = time.perf_counter()
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"features": features})[0]
        want = torch_outputs(model, features)
        max_abs_diff = float(np.abs(got - want).max()) if len(features) else 0.0
        return {
            "files": {"onnx": path.name},
            "onnx_bytes": path.stat().st_size,
            "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "checker": "passed",
            "max_abs_diff": max_abs_diff,
            "tolerance": TOLERANCE,
            "agrees": max_abs_diff <= TOLERANCE,
            "clips": len(features),
            "top1_differs": int((got.argmax(1) != want.argmax(1)).sum()),
            "input": {
                "name": "features",
                "shape": ["batch", *features.shape[1:]],
                "dtype": "float32",
            },
            "export_seconds": round(export_seconds, 3),
            "check_seconds": round(time.perf_counter() - started, 3),
        }


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Hush the warnings torch's exporter logs on every export (no CUDA, no torchvision ops):
    they say nothing about this model."""
    names = ("torch.onnx", "torch.utils.cpp_extension", "torch._export", "torch.export")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
