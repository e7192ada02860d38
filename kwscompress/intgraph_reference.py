"""A pure-numpy reference interpreter of an :class:`~kwscompress.intgraph.IntGraph`.

It computes what TFLite's reference int8 kernels compute, for a whole batch at once:

* int32 accumulation of ``weight * (input - input_zero_point)`` plus the int32 bias; padding
  contributes nothing (TFLite skips padded taps, which equals padding with the zero point);
* requantization by a per-channel fixed-point multiplier and shift derived from
  ``input_scale * weight_scale / output_scale`` as TFLite's ``QuantizeMultiplier`` does (scales
  are read as float32, as stored in a ``.tflite`` file, and combined in double precision; the
  fully connected layer multiplies ``input_scale * weight_scale`` in float32 first, as TFLite's
  ``GetQuantizedConvolutionMultipler`` does), then ``MultiplyByQuantizedMultiplier``
  (saturating rounding doubling high multiply, then rounding right shift);
* the output zero point is added and the result saturated to int8, or to ``[zero_point, 127]``
  with a fused ReLU;
* ``average_pool2d`` sums int8 codes over the valid taps of each window and divides rounding
  half away from zero; its output quantization must equal its input's, as in TFLite;
* ``softmax`` is computed in float64 from the dequantized input and quantized to the layer's
  output scale and zero point with round-half-even. TFLite's int8 softmax uses a fixed-point
  exponential instead, so its codes can differ from these by one.

This is TFLM's arithmetic (its reference kernels and CMSIS-NN round twice, as above); the tests
compare every tensor of TFLM's micro_speech model against TFLM itself. TensorFlow Lite 2.21's
own ``FULLY_CONNECTED`` kernel rounds once (``(x * m + round) >> (31 - shift)``), so on the rare
accumulators where the two roundings part it differs from TFLM and this module by one code.

The integer layers are exact: products and sums are formed in float32 where every partial sum
stays below 2**24, else in float64 (below 2**53), and converted to int64 before requantization.
"""

from __future__ import annotations

import math

import numpy as np

from kwscompress.intgraph import IntGraph, IntLayer, QuantParams, int8_codes

INT8_MIN, INT8_MAX = -128, 127

CHUNK = 256
"""Clips per im2col block of a convolution (bounds memory, not results)."""


def quantize_input(graph: IntGraph, float_features: np.ndarray) -> np.ndarray:
    """Float features ``[N, frames, bins]`` to the graph's int8 input codes (same shape).

    See :func:`kwscompress.intgraph.int8_codes`.
    """
    return int8_codes(float_features, graph.input.scale, graph.input.zero_point)


def run_int_graph(graph: IntGraph, int8_inputs: np.ndarray) -> np.ndarray:
    """Run the graph on int8 inputs ``[N, frames, bins]``; return int8 outputs ``[N, classes]``."""
    return trace_int_graph(graph, int8_inputs)[-1]


def trace_int_graph(graph: IntGraph, int8_inputs: np.ndarray) -> list[np.ndarray]:
    """Like :func:`run_int_graph`, but return every layer's int8 output, batch first.

    4-D outputs are NHWC ``[N, H, W, C]``; fully connected and softmax outputs are
    ``[N, features]``.
    """
    inputs = np.asarray(int8_inputs)
    if inputs.dtype != np.int8:
        raise ValueError(f"run_int_graph needs int8 inputs, got {inputs.dtype}")
    _, height, width, channels = graph.input_shape
    if inputs.size % (height * width * channels):
        raise ValueError(
            f"inputs of shape {inputs.shape} do not hold whole "
            f"{height} x {width} x {channels} clips"
        )
    x = inputs.reshape(-1, height, width, channels)
    params = graph.input
    outputs = []
    for layer in graph.layers:
        x = _LAYERS[layer.op](x, params, layer)
        params = layer.output
        outputs.append(x)
    return outputs


def quantize_multiplier(multiplier: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``multiplier ~= q * 2**(shift - 31)``, q in [2**30, 2**31).

    Returns ``(q, shift)``; ``(0, 0)`` for zero or for a multiplier too small to represent.
    """
    if multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(multiplier)
    # std::round rounds half away from zero; the fraction is positive here.
    q = math.floor(fraction * (1 << 31) + 0.5)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q), int(shift)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier`` on int64 arrays (broadcast over the last axis).

    TFLite computes ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, m),
    right)``. With ``m`` from :func:`quantize_multiplier` (in ``[0, 2**31)``) the high multiply
    never saturates, and its nudge-then-truncate-toward-zero equals ``(x * m + 2**30) >> 31``
    (floor) for either sign. ``RoundingDivideByPOT`` rounds half away from zero, which is
    ``(high + half - [high < 0]) >> right`` for ``right > 0``.
    """
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    if (multiplier < 0).any() or (multiplier >= 1 << 31).any():
        raise ValueError("quantized multipliers must be in [0, 2**31)")
    product = np.array(x, np.int64)
    if (shift > 0).any():
        product <<= np.maximum(shift, 0)
    product *= multiplier
    product += 1 << 30
    product >>= 31
    right = np.maximum(-shift, 0)
    negative = product >> 63  # -1 where negative, else 0
    negative &= (right > 0).astype(np.int64)  # 1 where negative and right > 0
    product += (np.int64(1) << right) >> 1
    product -= negative
    product >>= right
    return product


def output_multipliers(
    op: str, input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> list[tuple[int, int]]:
    """The ``(q, shift)`` per output channel that TFLite derives for a layer's requantization.

    ``input_scale * weight_scale / output_scale`` from the float32 scales a ``.tflite`` file
    stores: combined in double precision for ``conv2d`` and ``depthwise_conv2d``
    (``PopulateConvolutionQuantizationParams``); for ``fully_connected`` the first two are
    multiplied in float32 before widening, as ``GetQuantizedConvolutionMultipler`` does.
    """
    into, out = np.float32(input_scale), float(np.float32(output_scale))
    scales = np.asarray(weight_scales, np.float32).reshape(-1)
    if op == "fully_connected":
        return [quantize_multiplier(float(into * w) / out) for w in scales]
    return [quantize_multiplier(float(into) * float(w) / out) for w in scales]


def _requantize(accumulator: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    """int64 accumulators (bias added, channels last) to the layer's int8 output codes."""
    multipliers = output_multipliers(layer.op, params.scale, layer.weight_scale, layer.output.scale)
    quantized = np.array([m for m, _ in multipliers], np.int64)
    shifts = np.array([s for _, s in multipliers], np.int64)
    scaled = multiply_by_quantized_multiplier(accumulator, quantized, shifts)
    scaled += layer.output.zero_point
    return _saturate(scaled, layer.output, layer.fused_relu)


def _saturate(values: np.ndarray, output: QuantParams, fused_relu: bool) -> np.ndarray:
    """Clamp int64 ``values`` in place to int8, or to ``[zero_point, 127]`` with a fused ReLU."""
    low = max(INT8_MIN, output.zero_point) if fused_relu else INT8_MIN
    np.maximum(values, low, out=values)
    np.minimum(values, INT8_MAX, out=values)
    return values.astype(np.int8)


def _with_bias(accumulator: np.ndarray, layer: IntLayer) -> np.ndarray:
    result = np.rint(accumulator).astype(np.int64)
    if layer.bias is not None:
        result += np.asarray(layer.bias, np.int64)
    return result


def _padded(
    x: np.ndarray, params: QuantParams, layer: IntLayer, dtype: type = np.float64
) -> np.ndarray:
    """The input minus its zero point, zero-padded as the layer says."""
    top, bottom, left, right = layer.padding
    centred = x.astype(dtype) - dtype(params.zero_point)
    return np.pad(centred, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _taps(padded: np.ndarray, layer: IntLayer, kernel: tuple[int, int]):
    """Yield ``(i, j, window)``: the input pixels that kernel tap ``(i, j)`` meets."""
    _, out_h, out_w, _ = layer.output_shape
    stride_h, stride_w = layer.stride
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield (
                i,
                j,
                padded[
                    :,
                    i : i + stride_h * (out_h - 1) + 1 : stride_h,
                    j : j + stride_w * (out_w - 1) + 1 : stride_w,
                    :,
                ],
            )


def _conv2d(x: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    weights = np.asarray(layer.weights)  # [out, kh, kw, in]
    out_c, kh, kw, in_c = weights.shape
    dtype = _exact_dtype(kh * kw * in_c)
    # [out, (kh, kw, in)], matching the rows of the patch matrix below
    matrix = weights.reshape(out_c, -1).astype(dtype)
    _, out_h, out_w, _ = layer.output_shape
    accumulator = np.empty((len(x), out_h, out_w, out_c))
    for start in range(0, len(x), CHUNK):
        padded = _padded(x[start : start + CHUNK], params, layer, dtype)
        count = len(padded)
        # im2col, tap-major: row (i, j, c) holds input channel c under kernel tap (i, j) for
        # every output pixel, so one matrix product computes the whole chunk.
        patches = np.empty((kh, kw, in_c, count, out_h, out_w), dtype)
        for i, j, window in _taps(padded, layer, (kh, kw)):
            patches[i, j] = window.transpose(3, 0, 1, 2)
        product = matrix @ patches.reshape(kh * kw * in_c, -1)
        accumulator[start : start + count] = product.reshape(out_c, count, out_h, out_w).transpose(
            1, 2, 3, 0
        )
    return _requantize(_with_bias(accumulator, layer), params, layer)


def _exact_dtype(terms: int) -> type:
    """float32 when a sum of ``terms`` products of int8 weights and centred int8 inputs
    (each below 2**15 in magnitude) stays below 2**24, where float32 holds integers exactly."""
    return np.float32 if terms * 127 * 255 < 1 << 24 else np.float64


def _depthwise_conv2d(x: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    weights = np.asarray(layer.weights)  # [1, kh, kw, out]
    out_c = weights.shape[3]
    multiplier = out_c // x.shape[3]
    dtype = _exact_dtype(weights.shape[1] * weights.shape[2])
    weights = weights.astype(dtype)
    padded = _padded(x, params, layer, dtype)
    if multiplier > 1:
        # Output channel c reads input channel c // depth_multiplier.
        padded = np.repeat(padded, multiplier, axis=3)
    _, out_h, out_w, _ = layer.output_shape
    accumulator = np.zeros((len(x), out_h, out_w, out_c), dtype)
    for i, j, window in _taps(padded, layer, weights.shape[1:3]):
        accumulator += window * weights[0, i, j, :]
    return _requantize(_with_bias(accumulator, layer), params, layer)


def _fully_connected(x: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    weights = np.asarray(layer.weights, np.float64)  # [out, in]
    flat = x.reshape(len(x), -1).astype(np.float64) - params.zero_point
    return _requantize(_with_bias(flat @ weights.T, layer), params, layer)


def _average_pool2d(x: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    if (np.float32(layer.output.scale), layer.output.zero_point) != (
        np.float32(params.scale),
        params.zero_point,
    ):
        raise ValueError(
            f"layer {layer.name or 'average_pool2d'}: int8 average pooling keeps its input's "
            f"quantization ({params}), got {layer.output}"
        )
    top, bottom, left, right = layer.padding
    pad = ((0, 0), (top, bottom), (left, right), (0, 0))
    values = np.pad(x.astype(np.int64), pad)
    valid = np.pad(np.ones((1, *x.shape[1:3], 1), np.int64), pad)
    _, out_h, out_w, channels = layer.output_shape
    total = np.zeros((len(x), out_h, out_w, channels), np.int64)
    count = np.zeros((1, out_h, out_w, 1), np.int64)
    for _, _, window in _taps(values, layer, layer.pool):
        total += window
    for _, _, window in _taps(valid, layer, layer.pool):
        count += window
    half = count // 2
    # C's integer division truncates toward zero: round half away from zero on both sides.
    rounded = np.where(total > 0, (total + half) // count, -((half - total) // count))
    return _saturate(rounded, layer.output, layer.fused_relu)


def _softmax(x: np.ndarray, params: QuantParams, layer: IntLayer) -> np.ndarray:
    logits = params.dequantize(x.reshape(len(x), -1))
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return layer.output.quantize(probabilities)


_LAYERS = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _depthwise_conv2d,
    "fully_connected": _fully_connected,
    "average_pool2d": _average_pool2d,
    "softmax": _softmax,
}
