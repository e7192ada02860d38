"""Built-in quantization plugin: the ``ptq`` and ``qat`` quantizers (Brevitas) and their section.

:class:`~kwscompress_brevitas.quantizers.PtqQuantizer` and
:class:`~kwscompress_brevitas.quantizers.QatQuantizer` turn a float ``tiny_conv``, ``ds_cnn`` or
``tc_ds_cnn`` into a :class:`~kwscompress_brevitas.qmodels.QuantKwsNet`, whose ``int_graph()``
describes it in TFLite's int8 terms. The "Quantization" report section
(:class:`~kwscompress_brevitas.section.QuantizationSection`) compares the variants. Brevitas is
imported only when a model is quantized.
"""

from __future__ import annotations

import logging

from kwscompress import hookimpl
from kwscompress.protocols import Quantizer, ReportSection
from kwscompress_brevitas.quantizers import PtqQuantizer, QatQuantizer
from kwscompress_brevitas.section import QuantizationSection

__all__ = ["PtqQuantizer", "QatQuantizer", "QuantizationSection"]

# Brevitas imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on every
# machine without CUDA, on every run: nothing a CPU user needs to hear.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


@hookimpl
def kws_register_quantizers() -> list[Quantizer]:
    """The ``ptq`` and ``qat`` quantizers."""
    return [PtqQuantizer(), QatQuantizer()]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The "Quantization" section (order 82)."""
    return [QuantizationSection()]
