"""Built-in plugin kwscompress_tflite: ONNX and full-int8 TFLite export, verified in TFLM.

Registers the ``onnx`` and ``tflite`` exporters and the "Deployment" report section.
TensorFlow, onnx and tflite-micro are imported only when a variant is exported.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import Exporter, ReportSection
from kwscompress_tflite.onnx_exporter import OnnxExporter
from kwscompress_tflite.report import DeploymentSection
from kwscompress_tflite.tflite_exporter import TfliteExporter

__all__ = ["DeploymentSection", "OnnxExporter", "TfliteExporter"]


@hookimpl
def kws_register_exporters() -> list[Exporter]:
    """The ``onnx`` and ``tflite`` exporters."""
    return [OnnxExporter(), TfliteExporter()]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The "Deployment" section (order 90)."""
    return [DeploymentSection()]
