"""Layer outputs rounded the way TFLM rounds them, for :class:`~.qmodels.QuantKwsNet`'s forward.

Brevitas computes a layer in float and rounds its output once: ``round(y / output_scale)``.
TFLM (its reference kernels, CMSIS-NN and the generated kernels alike) computes the int32
accumulator exactly and requantizes it with a fixed-point multiplier: a rounding high multiply,
then a rounding right shift. The two roundings part from the one whenever the first lands a
value on a tie of the second. With low-bit activations the shift is short and that happens
often: a 4-bit ``tc_ds_cnn`` simulated by Brevitas alone picked another class than TFLM on 11 %
of the demo's test clips and scored 6 points more than the exported file did in TFLM.

So in eval mode each quantized output takes the value TFLM computes from the same integer
input, weights and bias (TFLite's multipliers from
:func:`kwscompress.intgraph_reference.output_multipliers`, its rounding from
:func:`device_codes`); where gradients are recorded they flow as Brevitas' own (straight
through the difference). The sweep's accuracy of a quantized variant, and the
validation score that picks QAT's best epoch, are then those of its export in TFLM; QAT's
training steps (train mode) run Brevitas' simulation, which its gradients are made for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from brevitas.quant_tensor import IntQuantTensor
from torch.nn import functional as F

from kwscompress.intgraph_reference import multiply_by_quantized_multiplier, output_multipliers

TIE_MARGIN = 2.0**-10
"""Extra width (in output codes) of the band around each half-way point where a code is computed
with TFLM's integer arithmetic: far wider than the float32 error of ``accumulator * multiplier``
for any code that does not saturate (below 2**-14)."""


def device_output(layer: Any, x: Any, relu: Any = None) -> Any:
    """The output of ``layer`` on ``x`` (then of ``relu``), quantized with TFLM's values.

    :param layer: a ``QuantConv2d`` or ``QuantLinear`` whose input is ``x``.
    :param x: the layer's input, an ``IntQuantTensor`` with zero point 0.
    :param relu: the ``QuantReLU`` whose quantizer quantizes the output (clamped at zero, as a
        fused ReLU); without it, the layer's own output quantizer.
    :returns: an ``IntQuantTensor`` on the output quantizer's grid. While gradients are
        recorded Brevitas computes the output too, and they flow through it (straight through
        the difference to TFLM's values); while ``x`` is not quantized (Brevitas is
        calibrating) Brevitas' output is returned as it is.
    """

    def brevitas() -> Any:
        return relu(layer(x)) if relu is not None else layer(x)

    quantized = brevitas() if torch.is_grad_enabled() or not isinstance(x, IntQuantTensor) else None
    if not isinstance(x, IntQuantTensor) or (
        quantized is not None and not isinstance(quantized, IntQuantTensor)
    ):
        return quantized
    output_quant = relu.act_quant if relu is not None else layer.output_quant
    fused_relu = relu is not None
    with torch.no_grad():
        # Its scale and bit width, from quantizing a zero: the proxy's scale() and bit_width()
        # each switch its modules to eval and back, which took most of a batch-1 pass.
        probe = output_quant(torch.zeros(1))
        scale, bits, signed = probe.scale, int(probe.bit_width), bool(probe.signed)
        weight = layer.quant_weight(x)
        bias = None
        if layer.bias is not None:
            bias = _codes(layer.bias_quant(layer.bias, x, weight))
        accumulator = _accumulator(layer, _codes(x), _codes(weight), bias)
        op = "fully_connected" if accumulator.dim() == 2 else "conv2d"
        multipliers = output_multipliers(
            op, float(x.scale), weight.scale.reshape(-1).numpy(), float(scale)
        )
        zero_point = int8_zero_point(bits, signed)
        # Saturated as TFLM does in int8 (a fused ReLU clamps at the zero point), then shifted
        # back to Brevitas' codes, which have zero point 0.
        low = max(-128, zero_point) if fused_relu else -128
        codes = device_codes(accumulator, multipliers).clamp_(low - zero_point, 127 - zero_point)
        value = codes * scale
    if quantized is not None:
        # TFLM's values forward, Brevitas' gradients backward.
        value = quantized.value + (value - quantized.value).detach()
    return IntQuantTensor(
        value, scale, torch.zeros_like(scale), torch.tensor(float(bits)), signed, False
    )


def device_codes(accumulator: torch.Tensor, multipliers: list[tuple[int, int]]) -> torch.Tensor:
    """TFLite's ``MultiplyByQuantizedMultiplier`` of exact integer accumulators (float tensors).

    Channels are on axis 1; ``multipliers`` holds ``(q, shift)`` per channel (or one for all).
    Away from the half-way points of its final rounding, TFLM's result is the plain rounding of
    ``accumulator * q * 2**(shift - 31)``, which float32 computes far more precisely than the
    distance to the nearest half-way point, so it is taken from there. Near them (within
    ``2**-(right shift + 1)``, where the first of TFLM's two roundings can decide, plus
    :data:`TIE_MARGIN`), the code is computed exactly
    (:func:`kwscompress.intgraph_reference.multiply_by_quantized_multiplier`): a few percent of
    codes at 4 bits, and the whole tensor costs a few float32 passes instead of int64 ones.
    """
    channels = accumulator.shape[1]
    quantized = np.broadcast_to(np.array([q for q, _ in multipliers], np.int64), (channels,))
    shifts = np.broadcast_to(np.array([s for _, s in multipliers], np.int64), (channels,))
    right = np.maximum(-shifts, 0)
    band = np.where(right > 0, 0.5 * 2.0 ** (-right.astype(np.float64)), 0.0) + TIE_MARGIN
    shape = (1, channels) + (1,) * (accumulator.dim() - 2)

    def per_channel(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).to(accumulator.dtype).reshape(shape)

    real = accumulator * per_channel(quantized * 2.0 ** (shifts.astype(np.float64) - 31))
    codes = torch.round(real)
    near = (real - codes).abs_() > per_channel(0.5 - band)
    where = near.nonzero(as_tuple=True)
    if len(where[0]):
        channel = where[1].numpy()
        exact = multiply_by_quantized_multiplier(
            accumulator[where].numpy().astype(np.int64), quantized[channel], shifts[channel]
        )
        codes[where] = torch.from_numpy(exact).to(codes.dtype)
    return codes


def int8_zero_point(bits: int, signed: bool) -> int:
    """The int8 zero point of a Brevitas activation with zero point 0.

    Signed values keep zero point 0. Unsigned ``bits``-bit codes ``0 .. 2**bits - 1`` are shifted
    to end at 127, so int8 saturation is the activation's own upper clamp: zero point
    ``128 - 2**bits`` (-128 for 8 bits: ``q_int8 = q_uint8 - 128``).
    """
    return 0 if signed else 128 - 2**bits


def _codes(quantized: Any) -> torch.Tensor:
    """The integer codes of a quant tensor with zero point 0, as floats.

    ``IntQuantTensor.int()`` would also check that the values lie on the grid, which takes
    longer than the division itself.
    """
    return torch.round(quantized.value / quantized.scale)


def _accumulator(
    layer: Any, codes: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The exact integer sums of ``layer`` over input ``codes``, plus the bias codes.

    In float32 (fast) when no sum can reach 2**24, where float32 stops holding every integer,
    else in float64 (exact below 2**53).
    """
    terms = weights[0].numel()  # inputs per output: (in / groups) x kernel, or in_features
    largest = float(codes.abs().max()) * float(weights.abs().max()) * terms
    if bias is not None:
        largest += float(bias.abs().max())
    dtype = torch.float32 if largest < 2**24 else torch.float64
    codes, weights = codes.to(dtype), weights.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    if isinstance(layer, torch.nn.Linear):
        return F.linear(codes, weights, bias)
    return F.conv2d(codes, weights, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
