"""Brevitas versions of the built-in models, built from a trained float model.

A float ``tiny_conv`` or DS-CNN (``ds_cnn``, ``tc_ds_cnn``) is read into a :class:`NetSpec`
(shapes taken from its modules, so a channel-pruned model works too; batch norm folded into the
convolution before it, as TFLite's converter does), and :class:`QuantKwsNet` rebuilds it from
Brevitas quant layers:

* the input is quantized to 8 bits (unsigned when the features are never negative, as the
  device's ``micro`` features are; signed otherwise);
* each convolution has ``weight_bits`` weights (per output channel, or per tensor), an int32 bias
  at ``input_scale * weight_scale`` and a ReLU whose output is ``act_bits`` unsigned;
* DS-CNN's global average pool is computed on the integer codes with TFLite's rounding;
* the fully connected layer has per-tensor ``weight_bits`` weights (TFLM builds before late 2024,
  such as the Arduino library, have no per-channel ``FULLY_CONNECTED``), an int32 bias and 8-bit
  signed logits.

The model returns float logits (dequantized int8), like the float models, so training and
evaluation code use it unchanged. :meth:`QuantKwsNet.int_graph` describes it as an
:class:`~kwscompress.intgraph.IntGraph` (see :mod:`kwscompress_brevitas.tograph`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFloat,
)
from brevitas.quant_tensor import IntQuantTensor
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from kwscompress.errors import KwsError
from kwscompress.intgraph import IntGraph
from kwscompress.models import DsCnn, TinyConv
from kwscompress_brevitas.device_rounding import device_output, int8_zero_point

SUPPORTED = {TinyConv: "tiny_conv", DsCnn: "ds_cnn"}
"""Float model classes this plugin can quantize, with their family names (``tc_ds_cnn`` is a
:class:`~kwscompress.models.DsCnn` too)."""

INPUT_BITS = 8
"""Bits of the model input, as on the device."""

LOGIT_BITS = 8
"""Bits of the fully connected layer's output (int8 logits feed TFLite's int8 softmax)."""


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize: bit widths, scale granularity, and the sign of the input."""

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    """Per-output-channel weight scales for convolutions (the fully connected layer is always
    per tensor)."""
    signed_input: bool = False
    """Whether the features can be negative (not for ``micro`` features)."""


@dataclass(frozen=True)
class ConvSpec:
    """One convolution (followed by ReLU) of the chain."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    bias: bool


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a :class:`QuantKwsNet` (its pickled form, with weights)."""

    arch: str
    input_shape: tuple[int, int]
    convs: tuple[ConvSpec, ...]
    head: str
    """``flatten`` (TinyConv: C, H, W flatten into ``fc``) or ``average`` (global average)."""
    fc_in: int
    num_classes: int
    dropout: float
    quant: QuantConfig
    labels: tuple[str, ...] = ()
    """Class names in output order (carried into the integer graph)."""

    def conv_shapes(self) -> list[tuple[int, int, int]]:
        """``(height, width, channels)`` after each convolution."""
        height, width = self.input_shape
        shapes = []
        for conv in self.convs:
            height = (height + 2 * conv.padding[0] - conv.kernel[0]) // conv.stride[0] + 1
            width = (width + 2 * conv.padding[1] - conv.kernel[1]) // conv.stride[1] + 1
            shapes.append((height, width, conv.out_channels))
        return shapes


class TflAveragePool(nn.Module):
    """Global average pooling as TFLite's int8 ``AVERAGE_POOL_2D`` computes it.

    On a quantized input the mean is taken over the int8 codes (``code + zero_point``, where an
    unsigned ``b``-bit code maps to int8 with zero point ``128 - 2**b``) and rounded half away
    from zero, so the output stays on the input's grid with the same scale, as TFLite requires.
    Gradients pass straight through the rounding. A float input (calibration) is averaged plainly.
    """

    def forward(self, x: Any) -> Any:
        """``[N, C, H, W]`` in, ``[N, C, 1, 1]`` out."""
        if not isinstance(x, IntQuantTensor):
            return x.mean(dim=(2, 3), keepdim=True)
        offset = int8_zero_point(int(x.bit_width), bool(x.signed))
        codes = x.int(float_datatype=True) + offset
        mean = codes.mean(dim=(2, 3), keepdim=True)
        rounded = torch.sign(mean) * torch.floor(mean.abs() + 0.5)
        rounded = mean + (rounded - mean).detach()
        value = (rounded - offset - x.zero_point) * x.scale
        return IntQuantTensor(value, x.scale, x.zero_point, x.bit_width, x.signed, self.training)


class QuantKwsNet(nn.Module):
    """A Brevitas-quantized ``tiny_conv`` or DS-CNN: features in, float logits out.

    Build it with :func:`quantize_float_model`. It pickles as its :class:`NetSpec` plus its
    ``state_dict`` (Brevitas' quantizer classes themselves cannot be pickled), so
    ``torch.save(model)`` and ``copy.deepcopy`` work.

    In eval mode it computes what TFLM computes for its integer graph, bit for bit up to the
    logits (:mod:`~kwscompress_brevitas.device_rounding`); in training mode it is Brevitas'
    simulation, whose single rounding of each output the gradients are made for.
    """

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.input_shape = spec.input_shape
        self.device_rounding = True
        """In eval mode, compute each quantized output as TFLM does (see
        :mod:`~kwscompress_brevitas.device_rounding`); off, Brevitas' own rounding, which its
        graph modes that hook the layers (bias correction) need."""
        quant = spec.quant
        self.weight_bits = quant.weight_bits
        self.act_bits = quant.act_bits
        input_quant = Int8ActPerTensorFloat if quant.signed_input else Uint8ActPerTensorFloat
        self.input_quant = QuantIdentity(
            act_quant=input_quant, bit_width=INPUT_BITS, return_quant_tensor=True
        )
        conv_quant = Int8WeightPerChannelFloat if quant.per_channel else Int8WeightPerTensorFloat
        self.convs = nn.ModuleList(
            QuantConv2d(
                c.in_channels,
                c.out_channels,
                c.kernel,
                stride=c.stride,
                padding=c.padding,
                groups=c.groups,
                bias=c.bias,
                weight_quant=conv_quant,
                weight_bit_width=quant.weight_bits,
                bias_quant=Int32Bias,
            )
            for c in spec.convs
        )
        self.relus = nn.ModuleList(
            QuantReLU(
                act_quant=Uint8ActPerTensorFloat,
                bit_width=quant.act_bits,
                return_quant_tensor=True,
            )
            for _ in spec.convs
        )
        self.pool = TflAveragePool() if spec.head == "average" else None
        self.fc = QuantLinear(
            spec.fc_in,
            spec.num_classes,
            bias=True,
            weight_quant=Int8WeightPerTensorFloat,
            weight_bit_width=quant.weight_bits,
            bias_quant=Int32Bias,
            output_quant=Int8ActPerTensorFloat,
            output_bit_width=LOGIT_BITS,
            return_quant_tensor=True,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits; flat ``[N, frames * bins]`` features work too."""
        x = self.input_quant(features.reshape(-1, 1, *self.input_shape))
        device = self.device_rounding and not self.training
        last = len(self.convs) - 1
        for index, (conv, relu) in enumerate(zip(self.convs, self.relus, strict=True)):
            if device:
                x = device_output(conv, x, relu)
                continue
            y = conv(x)
            if index == last and self.spec.dropout:
                # relu(dropout(y)) == dropout(relu(y)): dropping before the quantizer keeps
                # the ReLU output on its grid for the fully connected layer's int32 bias.
                y = F.dropout(y, self.spec.dropout, self.training)
            x = relu(y)
        if self.pool is not None:
            x = self.pool(x)
        x = torch.flatten(x, 1)
        logits = device_output(self.fc, x) if device else self.fc(x)
        # A plain tensor while Brevitas calibrates (its quantizers are off then).
        return logits.value if isinstance(logits, IntQuantTensor) else logits

    def int_graph(self) -> IntGraph:
        """The integer graph this model computes, in TFLite's int8 terms (eval-mode values)."""
        from kwscompress_brevitas.tograph import int_graph

        return int_graph(self)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return (_rebuild, (self.spec, state, self.training))


def _rebuild(spec: NetSpec, state: dict[str, torch.Tensor], training: bool) -> QuantKwsNet:
    model = QuantKwsNet(spec)
    model.load_state_dict(state)
    return model.train(training)


def quantize_float_model(
    model: nn.Module, quant: QuantConfig, labels: tuple[str, ...] = ()
) -> QuantKwsNet:
    """A :class:`QuantKwsNet` with ``model``'s weights (batch norm folded); ``model`` is unchanged.

    Weights are read through ``module.weight``, so a model carrying ``torch.nn.utils.prune``
    masks contributes its masked weights. Activation scales are not set yet: calibrate them
    (``brevitas.graph.calibrate.calibration_mode``) before use.

    :param labels: class names in output order, carried into :meth:`QuantKwsNet.int_graph`.
    :raises ~kwscompress.errors.KwsError: ``model`` is not a supported architecture.
    """
    spec, convs, fc = _read_float(model, quant, tuple(labels))
    qmodel = QuantKwsNet(spec)
    with torch.no_grad():
        for qconv, (weight, bias) in zip(qmodel.convs, convs, strict=True):
            qconv.weight.copy_(weight)
            if bias is not None:
                qconv.bias.copy_(bias)
        qmodel.fc.weight.copy_(fc.weight.detach())
        qmodel.fc.bias.copy_(fc.bias.detach())
    return qmodel.train(model.training)


def _read_float(
    model: nn.Module, quant: QuantConfig, labels: tuple[str, ...]
) -> tuple[NetSpec, list[tuple[torch.Tensor, torch.Tensor | None]], nn.Linear]:
    if isinstance(model, TinyConv):
        pairs = [(model.conv, None)]
        head, dropout = "flatten", float(model.dropout.p)
    elif isinstance(model, DsCnn):
        pairs = [(model.stem[0], model.stem[1])]
        pairs += [(layer[0], layer[1]) for block in model.blocks for layer in block]
        head, dropout = "average", 0.0
    else:
        names = ", ".join(f"{name} ({cls.__name__})" for cls, name in SUPPORTED.items())
        raise KwsError(
            f"the brevitas quantizers cannot quantize a {type(model).__name__}; "
            f"supported models: {names}"
        )
    convs, weights = [], []
    for conv, bn in pairs:
        weight = conv.weight.detach().clone()
        bias = None if conv.bias is None else conv.bias.detach().clone()
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(
                weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            weight, bias = weight.detach(), bias.detach()
        weights.append((weight, bias))
        convs.append(
            ConvSpec(
                conv.in_channels,
                conv.out_channels,
                tuple(conv.kernel_size),
                tuple(conv.stride),
                tuple(conv.padding),
                conv.groups,
                bias is not None,
            )
        )
    spec = NetSpec(
        arch=SUPPORTED[type(model)],
        input_shape=tuple(model.input_shape),
        convs=tuple(convs),
        head=head,
        fc_in=model.fc.in_features,
        num_classes=model.fc.out_features,
        dropout=dropout,
        quant=quant,
        labels=labels,
    )
    height, width, channels = spec.conv_shapes()[-1]
    expected = channels * (height * width if head == "flatten" else 1)
    if expected != spec.fc_in:
        raise KwsError(
            f"{type(model).__name__}: fc has {spec.fc_in} inputs but the convolutions produce "
            f"{expected} ({channels} channels of {height} x {width})"
        )
    return spec, weights, model.fc
