"""A quantized model (:class:`~kwscompress_brevitas.qmodels.QuantKwsNet`) as an ``IntGraph``.

Brevitas' integers map onto TFLite's int8 scheme:

* weights are narrow-range symmetric (zero point 0), ``[out, in, kh, kw]`` transposed to
  TFLite's ``[out, kh, kw, in]`` (``[1, kh, kw, out]`` for a depthwise convolution);
* an unsigned ``b``-bit activation code ``q`` becomes the int8 code ``q + 128 - 2**b`` with zero
  point ``128 - 2**b`` (for 8 bits ``q - 128``, zero point -128), so int8 saturation at 127 is
  the activation's upper clamp and a fused ReLU (clamp at the zero point) its lower one;
  signed activations keep zero point 0;
* biases are the int32 codes Brevitas' ``Int32Bias`` computes, at ``input_scale * weight_scale``;
* the fully connected layer's columns are reordered from PyTorch's (C, H, W) flatten to TFLite's
  (H, W, C);
* a final ``softmax`` has TFLite's fixed output quantization: scale 1/256, zero point -128.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kwscompress.intgraph import IntGraph, IntLayer, QuantParams
from kwscompress_brevitas.device_rounding import int8_zero_point

if TYPE_CHECKING:
    from kwscompress_brevitas.qmodels import QuantKwsNet

SOFTMAX_OUTPUT = QuantParams(scale=1.0 / 256.0, zero_point=-128)
"""TFLite's int8 softmax output quantization."""


def int_graph(model: QuantKwsNet) -> IntGraph:
    """Describe ``model`` (in eval mode, after calibration) as an :class:`IntGraph`."""
    spec = model.spec
    biases = _bias_codes(model)
    frames, bins = spec.input_shape
    input_params = _activation(model.input_quant.act_quant)
    layers: list[IntLayer] = []
    shapes = spec.conv_shapes()
    for index, (conv_spec, conv, relu, shape) in enumerate(
        zip(spec.convs, model.convs, model.relus, shapes, strict=True)
    ):
        weights, scales = _weights(conv)
        if conv_spec.groups == 1:
            op, weights = "conv2d", weights.transpose(0, 2, 3, 1)
        elif conv_spec.groups == conv_spec.in_channels:
            op, weights = "depthwise_conv2d", weights.transpose(1, 2, 3, 0)
        else:
            raise ValueError(f"conv {index}: grouped convolutions have no TFLite int8 op")
        pad_h, pad_w = conv_spec.padding
        layers.append(
            IntLayer(
                op=op,
                output=_activation(relu.act_quant),
                output_shape=(1, *shape),
                weights=np.ascontiguousarray(weights),
                weight_scale=scales,
                bias=biases[index],
                stride=conv_spec.stride,
                padding=(pad_h, pad_h, pad_w, pad_w),
                fused_relu=True,
                weight_bits=spec.quant.weight_bits,
                name=f"conv{index}",
            )
        )
    height, width, channels = shapes[-1]
    if spec.head == "average":
        layers.append(
            IntLayer(
                op="average_pool2d",
                output=layers[-1].output,
                output_shape=(1, 1, 1, channels),
                stride=(height, width),
                pool=(height, width),
                name="pool",
            )
        )
    weights, scales = _weights(model.fc)
    if spec.head == "flatten":
        weights = weights.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    layers.append(
        IntLayer(
            op="fully_connected",
            output=_activation(model.fc.output_quant),
            output_shape=(1, spec.num_classes),
            weights=np.ascontiguousarray(weights.reshape(spec.num_classes, -1)),
            weight_scale=scales,
            bias=biases[-1],
            weight_bits=spec.quant.weight_bits,
            name="fc",
        )
    )
    layers.append(
        IntLayer(
            op="softmax", output=SOFTMAX_OUTPUT, output_shape=(1, spec.num_classes), name="softmax"
        )
    )
    return IntGraph(
        input_shape=(1, frames, bins, 1),
        input=input_params,
        layers=layers,
        labels=list(spec.labels),
    )


def _activation(proxy: Any) -> QuantParams:
    """The int8 scale and zero point of a Brevitas activation quantizer."""
    with torch.no_grad():
        scale, zero_point, bits = proxy.scale(), proxy.zero_point(), proxy.bit_width()
    if float(zero_point) != 0.0:
        raise ValueError("only activation quantizers with zero point 0 map onto int8 here")
    return QuantParams(float(scale), int8_zero_point(int(bits), bool(proxy.is_signed)))


def _weights(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights (int8, PyTorch layout) and float32 scales, one per output channel."""
    with torch.no_grad():
        quant = layer.quant_weight()
        codes = quant.int().to(torch.int8).numpy()
        scale = quant.scale.detach().to(torch.float32).reshape(-1).numpy()
    return codes, np.broadcast_to(scale, (codes.shape[0],)).astype(np.float32)


def _bias_codes(model: QuantKwsNet) -> list[np.ndarray]:
    """The int32 bias codes of every conv and of ``fc``, from one batch-1 eval forward pass.

    A layer's int32 bias scale depends on its input's scale, which Brevitas only sees during a
    forward pass; a bias-free convolution gets zeros.
    """
    layers = [*model.convs, model.fc]
    codes: dict[int, np.ndarray] = {}
    hooks = []
    for index, layer in enumerate(layers):
        if layer.bias is None:
            codes[index] = np.zeros(layer.out_channels, np.int32)
            continue

        def keep(_module: Any, _inputs: Any, output: Any, index: int = index) -> None:
            codes[index] = output.int().to(torch.int64).numpy()

        hooks.append(layer.bias_quant.register_forward_hook(keep))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *model.spec.input_shape)))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    int32 = np.iinfo(np.int32)
    result = []
    for index in range(len(layers)):
        if codes[index].min() < int32.min or codes[index].max() > int32.max:
            raise ValueError(f"layer {index}: bias codes do not fit int32")
        result.append(codes[index].astype(np.int32))
    return result
