"""The bridge: an :class:`~kwscompress.intgraph.IntGraph` written as a full-int8 ``.tflite`` file.

No converter is involved: every integer weight, int32 bias, scale and zero point of the graph
goes into the flatbuffer as it is, so TFLM computes what the quantized model computes in eval
mode (Brevitas itself exports only ONNX, QONNX and QCDQ). The flatbuffer is assembled with
tflite-micro's model editor and re-packed with its aligner, which gives every buffer the 16-byte
alignment the schema asks for (``force_align: 16``; Cortex-M kernels read int32 biases in place).

Layout of the file (TFLite schema version 3):

* input ``[1, H * W * C]`` int8, as micro_speech's firmware fills it, then RESHAPE to NHWC;
* ``conv2d`` -> CONV_2D, ``depthwise_conv2d`` -> DEPTHWISE_CONV_2D (weights int8 per channel,
  quantized dimension 0 and 3; biases int32 at ``input_scale * weight_scale``), with padding
  ``SAME`` or ``VALID`` where one of them is the layer's padding, otherwise a PAD op (padding
  with the input's zero point, i.e. real zero) before a ``VALID`` convolution;
* ``fully_connected`` -> FULLY_CONNECTED on the NHWC tensor as it is (the op flattens its
  input, so no RESHAPE and no second activation buffer), weights per tensor when the graph has
  one scale for all outputs, else per channel (which TFLM runs correctly only since
  tflite-micro PR #2673, September 2024: the exporter's record says so);
* ``average_pool2d`` -> AVERAGE_POOL_2D (int8 pooling keeps its input's scale and zero point);
* ``softmax`` -> SOFTMAX (output scale 1/256, zero point -128).

Scales are stored as float32, as the schema defines them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kwscompress.errors import KwsError
from kwscompress.intgraph import IntGraph, IntLayer, QuantParams
from kwscompress_tflite.common import align_buffers
from kwscompress_tflite.keras_route import same_padding

SOFTMAX_OUTPUT = QuantParams(1 / 256, -128)
"""The only int8 softmax output TFLM's kernel accepts."""

OP_VERSIONS = {
    "RESHAPE": 1,
    "PAD": 2,
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4,
    "AVERAGE_POOL_2D": 2,
    "SOFTMAX": 2,
}
"""Operator versions of int8 kernels, as TensorFlow's converter writes them."""


class _Writer:
    """Accumulates tensors and operators of one subgraph."""

    def __init__(self, variant_id: str) -> None:
        from tflite_micro.tensorflow.lite.micro.compression import model_editor
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

        self.editor, self.schema = model_editor, schema
        self.variant_id = variant_id
        self.graph = model_editor.Subgraph(name="main")
        self.codes: dict[str, Any] = {}

    def activation(self, name: str, shape: tuple[int, ...], quant: QuantParams) -> Any:
        return self.graph.add_tensor(
            name=name,
            shape=tuple(int(n) for n in shape),
            dtype=self.schema.TensorType.INT8,
            quantization=self.editor.Quantization(float(quant.scale), int(quant.zero_point)),
        )

    def constant(
        self,
        name: str,
        values: np.ndarray,
        scales: np.ndarray | None = None,
        axis: int = 0,
    ) -> Any:
        values = np.ascontiguousarray(values)
        dtype = {
            np.dtype(np.int8): self.schema.TensorType.INT8,
            np.dtype(np.int32): self.schema.TensorType.INT32,
        }[values.dtype]
        quantization = None
        if scales is not None:
            scales = np.asarray(scales, np.float32)
            quantization = self.editor.Quantization(
                [float(s) for s in scales], [0] * len(scales), axis
            )
        return self.graph.add_tensor(
            name=name, shape=values.shape, dtype=dtype, data=values, quantization=quantization
        )

    def op(
        self,
        code: str,
        inputs: list[Any],
        output: Any,
        options_type: str = "NONE",
        options: Any = None,
    ) -> Any:
        schema = self.schema
        builtin = getattr(schema.BuiltinOperator, code)
        if code not in self.codes:
            opcode = schema.OperatorCodeT()
            # deprecated_builtin_code too: runtimes older than TF 2.5 read only that field.
            opcode.builtinCode = opcode.deprecatedBuiltinCode = builtin
            opcode.version = OP_VERSIONS[code]
            self.codes[code] = self.editor.OperatorCode(_fb=opcode)
        raw = schema.OperatorT()
        raw.builtinOptionsType = getattr(schema.BuiltinOptions, options_type)
        raw.builtinOptions = options
        self.graph.add_operator(opcode=builtin, inputs=inputs, outputs=[output], _fb=raw)
        return output

    def options(self, kind: str, **fields: Any) -> Any:
        value = getattr(self.schema, f"{kind}T")()
        for key, field_value in fields.items():
            setattr(value, key, field_value)
        return value

    def fail(self, index: int, layer: IntLayer, problem: str) -> KwsError:
        return KwsError(
            f"variant {self.variant_id!r}: the TFLite bridge cannot write layer {index} "
            f"({layer.op} {layer.name!r}): {problem}"
        )


def int_graph_to_tflite(graph: IntGraph, variant_id: str) -> bytes:
    """The ``.tflite`` bytes of ``graph``, 16-byte aligned, ready to flash.

    :raises ~kwscompress.errors.KwsError: a layer the bridge cannot express (naming the variant
        and the layer), or a graph that does not end in micro_speech's int8 softmax.
    """
    if not graph.layers or graph.layers[-1].op != "softmax":
        raise KwsError(
            f"variant {variant_id!r}: the TFLite bridge needs an IntGraph that ends in a softmax "
            f"layer, got {[layer.op for layer in graph.layers]}"
        )
    writer = _Writer(variant_id)
    shape = tuple(int(n) for n in graph.input_shape)
    quant = graph.input
    flat = writer.activation("features", (1, int(np.prod(shape[1:]))), quant)
    x = writer.op(
        "RESHAPE",
        [flat, writer.constant("features_shape", np.asarray(shape, np.int32))],
        writer.activation("features_nhwc", shape, quant),
    )
    for index, layer in enumerate(graph.layers):
        name = layer.name or f"{layer.op}_{index}"
        output = writer.activation(name, layer.output_shape, layer.output)
        if layer.op in ("conv2d", "depthwise_conv2d"):
            x = _convolution(writer, index, layer, name, x, shape, quant, output)
        elif layer.op == "fully_connected":
            x = _fully_connected(writer, index, layer, name, x, quant, output)
        elif layer.op == "average_pool2d":
            x = _average_pool(writer, index, layer, name, x, shape, quant, output)
        elif layer.op == "softmax":
            if (layer.output.scale, layer.output.zero_point) != (
                SOFTMAX_OUTPUT.scale,
                SOFTMAX_OUTPUT.zero_point,
            ):
                raise writer.fail(index, layer, "TFLM's int8 softmax needs scale 1/256, zp -128")
            x = writer.op(
                "SOFTMAX", [x], output, "SoftmaxOptions", writer.options("SoftmaxOptions", beta=1.0)
            )
        else:
            raise writer.fail(index, layer, "unknown op")
        shape, quant = tuple(layer.output_shape), layer.output
    writer.graph.inputs, writer.graph.outputs = [flat], [x]
    model = writer.editor.Model(
        subgraphs=[writer.graph],
        operator_codes=list(writer.codes.values()),
        description=f"kwscompress IntGraph bridge: {variant_id}",
    )
    return align_buffers(bytes(model.build()))


def _convolution(
    writer: _Writer,
    index: int,
    layer: IntLayer,
    name: str,
    x: Any,
    in_shape: tuple[int, ...],
    in_quant: QuantParams,
    output: Any,
) -> Any:
    schema = writer.schema
    weights = _int8_weights(writer, index, layer)
    depthwise = layer.op == "depthwise_conv2d"
    channels = weights.shape[3] if depthwise else weights.shape[0]
    kernel = weights.shape[1:3]
    padding, x = _padding(writer, index, layer, name, x, in_shape, in_quant, kernel)
    scales = np.asarray(layer.weight_scale, np.float32)
    filters = writer.constant(f"{name}/weights", weights, scales, axis=3 if depthwise else 0)
    bias = writer.constant(
        f"{name}/bias",
        np.asarray(layer.bias, np.int32),
        np.float32(in_quant.scale) * scales,
    )
    fields = {
        "padding": padding,
        "strideH": int(layer.stride[0]),
        "strideW": int(layer.stride[1]),
        "dilationHFactor": 1,
        "dilationWFactor": 1,
        "fusedActivationFunction": _activation(schema, layer),
    }
    if depthwise:
        in_channels = in_shape[3]
        if channels % in_channels:
            raise writer.fail(index, layer, f"{channels} outputs from {in_channels} inputs")
        options = writer.options(
            "DepthwiseConv2DOptions", depthMultiplier=channels // in_channels, **fields
        )
        return writer.op(
            "DEPTHWISE_CONV_2D", [x, filters, bias], output, "DepthwiseConv2DOptions", options
        )
    options = writer.options("Conv2DOptions", **fields)
    return writer.op("CONV_2D", [x, filters, bias], output, "Conv2DOptions", options)


def _padding(
    writer: _Writer,
    index: int,
    layer: IntLayer,
    name: str,
    x: Any,
    in_shape: tuple[int, ...],
    in_quant: QuantParams,
    kernel: tuple[int, int],
) -> tuple[int, Any]:
    """TFLite padding mode for ``layer``; a PAD op goes in front when neither mode matches."""
    top, bottom, left, right = (int(p) for p in layer.padding)
    sizes, strides = in_shape[1:3], layer.stride
    want = tuple(layer.output_shape[1:3])
    same = tuple(-(-n // s) for n, s in zip(sizes, strides, strict=True))
    leading = tuple(
        same_padding(n, k, s)[0] for n, k, s in zip(sizes, kernel, strides, strict=True)
    )
    if (top, bottom, left, right) == (0, 0, 0, 0) or (same == want and leading == (top, left)):
        padding = (
            writer.schema.Padding.VALID
            if top == bottom == left == right == 0
            else writer.schema.Padding.SAME
        )
        padded = sizes
    else:
        padded = (sizes[0] + top + bottom, sizes[1] + left + right)
        pads = np.asarray([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
        x = writer.op(
            "PAD",
            [x, writer.constant(f"{name}/paddings", pads)],
            writer.activation(f"{name}/padded", (1, *padded, in_shape[3]), in_quant),
        )
        padding = writer.schema.Padding.VALID
    if padding == writer.schema.Padding.VALID:
        valid = tuple((n - k) // s + 1 for n, k, s in zip(padded, kernel, strides, strict=True))
        if valid != want:
            raise writer.fail(
                index, layer, f"padding {layer.padding} gives {valid}, the graph says {want}"
            )
    return padding, x


def _fully_connected(
    writer: _Writer,
    index: int,
    layer: IntLayer,
    name: str,
    x: Any,
    in_quant: QuantParams,
    output: Any,
) -> Any:
    weights = _int8_weights(writer, index, layer)
    scales = np.asarray(layer.weight_scale, np.float32)
    if np.all(scales == scales[0]):
        scales = scales[:1]  # one scale: per-tensor, which every TFLM version runs
    filters = writer.constant(f"{name}/weights", weights, scales)
    bias = writer.constant(
        f"{name}/bias", np.asarray(layer.bias, np.int32), np.float32(in_quant.scale) * scales
    )
    options = writer.options(
        "FullyConnectedOptions",
        fusedActivationFunction=_activation(writer.schema, layer),
        keepNumDims=False,
    )
    return writer.op(
        "FULLY_CONNECTED", [x, filters, bias], output, "FullyConnectedOptions", options
    )


def _average_pool(
    writer: _Writer,
    index: int,
    layer: IntLayer,
    name: str,
    x: Any,
    in_shape: tuple[int, ...],
    in_quant: QuantParams,
    output: Any,
) -> Any:
    schema = writer.schema
    pool = tuple(int(p) for p in layer.pool)
    if layer.fused_relu:
        raise writer.fail(index, layer, "a fused ReLU after average pooling")
    if (np.float32(layer.output.scale), layer.output.zero_point) == (
        np.float32(in_quant.scale),
        in_quant.zero_point,
    ):
        # A global pool has one window whatever its stride; write the pool size, as the
        # converter does.
        stride = pool if pool == tuple(in_shape[1:3]) else tuple(layer.stride)
        options = writer.options(
            "Pool2DOptions",
            padding=schema.Padding.VALID,
            strideH=int(stride[0]),
            strideW=int(stride[1]),
            filterHeight=pool[0],
            filterWidth=pool[1],
            fusedActivationFunction=schema.ActivationFunctionType.NONE,
        )
        return writer.op("AVERAGE_POOL_2D", [x], output, "Pool2DOptions", options)
    raise writer.fail(
        index, layer, f"int8 average pooling keeps its input's quantization ({in_quant})"
    )


def _int8_weights(writer: _Writer, index: int, layer: IntLayer) -> np.ndarray:
    values = np.asarray(layer.weights)
    if values.size and (values.min() < -128 or values.max() > 127 or np.any(values % 1)):
        raise writer.fail(index, layer, "weights must be integers in [-128, 127]")
    return values.astype(np.int8)


def _activation(schema: Any, layer: IntLayer) -> int:
    kind = schema.ActivationFunctionType
    return kind.RELU if layer.fused_relu else kind.NONE
