"""Built-in quantization plugin: the ``ptq`` and ``qat`` quantizers (Brevitas) and their section.

:class:`~kwscompress_brevitas.quantizers.PtqQuantizer` and
:class:`~kwscompress_brevitas.quantizers.QatQuantizer` turn a float ``tiny_conv`` or ``ds_cnn``
into a :class:`~kwscompress_brevitas.qmodels.QuantKwsNet`, whose ``int_graph()`` describes it in
TFLite's int8 terms. The "Quantization" report section
(:class:`~kwscompress_brevitas.section.QuantizationSection`) compares the variants. Brevitas is
imported only when a model is quantized.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import Quantizer, ReportSection
from kwscompress_brevitas.quantizers import PtqQuantizer, QatQuantizer
from kwscompress_brevitas.section import QuantizationSection

__all__ = ["PtqQuantizer", "QatQuantizer", "QuantizationSection"]


@hookimpl
def kws_register_quantizers() -> list[Quantizer]:
    """The ``ptq`` and ``qat`` quantizers."""
    return [PtqQuantizer(), QatQuantizer()]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The "Quantization" section (order 82)."""
    return [QuantizationSection()]
