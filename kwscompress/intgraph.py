"""An integer inference graph: what a quantized variant computes, in TFLite's int8 terms.

A quantizer plugin describes its fake-quantized model as an :class:`IntGraph` (integer weights,
per-channel weight scales, int32 biases, the scale and zero point of every activation), and an
exporter turns the graph into a file (the Brevitas-to-TFLite bridge) without knowing which
quantization library produced it. Layouts follow TFLite, activations are NHWC:

=====================  ==================================  ================================
op                     ``weights`` (int8 values)           notes
=====================  ==================================  ================================
``conv2d``             ``[out, kh, kw, in]``               ``weight_scale`` per ``out``
``depthwise_conv2d``   ``[1, kh, kw, out]``                ``depth_multiplier = out / in``
``fully_connected``    ``[out, in]``                       input flattened in NHWC order
``average_pool2d``     none                                ``pool`` = ``(kh, kw)``
``softmax``            none                                output scale 1/256, zero point -128
=====================  ==================================  ================================

Arithmetic is TFLite's: ``real = scale * (q - zero_point)``; weights are symmetric (zero point
0); a bias is ``int32`` at scale ``input_scale * weight_scale[c]``; ``fused_relu`` clamps the
output at its zero point. Sub-8-bit variants keep their integer values (which fit in int8) and
say their real width in ``weight_bits``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


def int8_codes(features: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float features as the codes of an int8 model input, same shape.

    ``round(x / scale) + zero_point`` in float32, rounding half to even (as torch and Brevitas
    round), saturated to int8. Every check that feeds an exported model (the export's TFLM and
    reference runs, the integer-graph reference, the MCU stage, the stream's TFLite scorer) goes
    through here, so all of them feed the same codes.
    """
    codes = np.round(np.asarray(features, np.float32) / np.float32(scale)) + zero_point
    return np.clip(codes, -128, 127).astype(np.int8)


Op = Literal["conv2d", "depthwise_conv2d", "fully_connected", "average_pool2d", "softmax"]


@dataclass
class QuantParams:
    """Scale and zero point of one int8 tensor (per tensor)."""

    scale: float
    zero_point: int

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """Round ``real`` values to int8 with this scale and zero point (saturating)."""
        q = np.round(np.asarray(real, np.float64) / self.scale) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """The real values of int8 codes ``q``."""
        return (np.asarray(q, np.float64) - self.zero_point) * self.scale


@dataclass
class IntLayer:
    """One op of the graph; its input is the previous layer's output (or the graph input)."""

    op: Op
    output: QuantParams
    output_shape: tuple[int, ...]
    """NHWC for 4-D activations, ``(1, features)`` after a fully connected layer."""
    weights: np.ndarray | None = None
    weight_scale: np.ndarray | None = None
    """float32 ``[out]`` (a per-tensor scale is repeated per channel)."""
    bias: np.ndarray | None = None
    """int32 ``[out]``."""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Zero padding (top, bottom, left, right) in input pixels, applied at the input's zero
    point; an exporter maps it to SAME/VALID or a PAD op."""
    pool: tuple[int, int] = (1, 1)
    fused_relu: bool = False
    weight_bits: int = 8
    name: str = ""


@dataclass
class IntGraph:
    """A quantized model as a chain of int8 layers, batch 1."""

    input_shape: tuple[int, int, int, int]
    """NHWC, e.g. ``(1, 49, 40, 1)`` for 49 frames of 40 bins."""
    input: QuantParams
    layers: list[IntLayer] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def output(self) -> QuantParams:
        """Quantization of the graph's output."""
        return self.layers[-1].output if self.layers else self.input
