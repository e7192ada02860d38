"""Built-in plugin kwscompress_native: the board in the laptop.

Generates plain C99 int8 kernels for a ``.tflite`` graph (bit-exact with TFLM), builds them for
the host (checked against TFLM) and for a Cortex-M4F with zig (ELF section sizes), and runs the
cross build in an emulated Cortex-M4 to count instructions and model cycles.

Registers the MCU runtime ``native`` (:class:`kwscompress_native.runtime.NativeRuntime`) and the
"MCU (no board)" report section (:class:`kwscompress_native.section.McuSection`).
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import McuRuntime, ReportSection
from kwscompress_native.runtime import NativeRuntime
from kwscompress_native.section import McuSection

__all__ = ["NativeRuntime"]


@hookimpl
def kws_register_mcu_runtimes() -> list[McuRuntime]:
    """The ``native`` runtime."""
    return [NativeRuntime()]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The MCU section."""
    return [McuSection()]
