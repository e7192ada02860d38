"""TFLite's integer parameter arithmetic, done once at generation time in Python.

Each function mirrors the helper of the same role in TFLite's ``quantization_util.cc`` /
``kernel_util.cc`` (computed in double from the float32 scales of the flatbuffer, rounding half
away from zero like ``TfLiteRound``), so the constants baked into the C code equal the ones
TFLM computes when it prepares the same model.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)


def tflite_round(x: float) -> int:
    """``std::round``: halves away from zero."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``QuantizeMultiplier``: ``real`` as a Q31 significand and a power-of-two exponent."""
    if real == 0.0:
        return 0, 0
    significand, shift = math.frexp(real)
    q = tflite_round(significand * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:  # TFLite clamps very large multipliers the same way
        return (1 << 31) - 1, 30
    return q, shift


def conv_multipliers(
    input_scale: np.float32, filter_scales: np.ndarray, output_scale: np.float32, channels: int
) -> tuple[list[int], list[int]]:
    """Per-channel multipliers and shifts as TFLM's ``PopulateConvolutionQuantizationParams``."""
    scales = np.broadcast_to(np.asarray(filter_scales, np.float32), (channels,))
    mults, shifts = [], []
    for s in scales:
        m, sh = quantize_multiplier(float(input_scale) * float(s) / float(output_scale))
        mults.append(m)
        shifts.append(sh)
    return mults, shifts


def fc_multiplier(
    input_scale: np.float32, filter_scale: np.float32, output_scale: np.float32
) -> tuple[int, int]:
    """``GetQuantizedConvolutionMultipler`` for a per-tensor fully connected layer.

    TFLite multiplies the two scales in float32 before widening to double; so does this.
    """
    product = float(np.float32(input_scale) * np.float32(filter_scale))
    return quantize_multiplier(product / float(output_scale))


def activation_range(fused: int, scale: np.float32, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8: (min, max) after a fused activation.

    ``fused`` is the schema's ActivationFunctionType: 0 none, 1 ReLU, 2 ReLU_N1_TO_1, 3 ReLU6.
    """

    def q(value: float) -> int:
        return zero_point + tflite_round(float(np.float32(value) / np.float32(scale)))

    lo, hi = -128, 127
    if fused == 1:
        lo = max(lo, q(0.0))
    elif fused == 2:
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    elif fused == 3:
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif fused != 0:
        raise ValueError(f"fused activation {fused}")
    return lo, hi


def softmax_params(beta: float, input_scale: np.float32) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) as TFLM's int8 softmax prepare computes."""
    integer_bits = 5  # kScaledDiffIntegerBits
    real = min(float(beta) * float(input_scale) * (1 << (31 - integer_bits)), float((1 << 31) - 1))
    multiplier, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError("softmax input scale too small for QuantizeMultiplierGreaterThanOne")
    radius = math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift))
    return multiplier, left_shift, -radius


def wrap_int32(value: int) -> int:
    """``value`` modulo 2**32 as a signed int32 (the C accumulator's wrap-around)."""
    return ((value - INT32_MIN) % (1 << 32)) + INT32_MIN
