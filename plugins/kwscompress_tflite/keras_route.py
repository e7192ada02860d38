"""The Keras route: a float (or pruned) PyTorch model rebuilt in Keras, then TensorFlow's converter.

The Keras model takes what the firmware feeds, ``[1, frames * bins]`` (micro_speech's
``[1, 1960]``), with the batch fixed at 1 so that no Flatten with a free batch size adds
SHAPE, STRIDED_SLICE and PACK ops. Weights are copied from PyTorch with two layout changes:

* convolution kernels go from ``[out, in, kh, kw]`` to Keras' ``[kh, kw, in, out]`` (depthwise
  ``[kh, kw, channels, 1]``), batch norm is folded into the convolution before it;
* the first fully connected layer after a flatten gets its input columns permuted, because
  PyTorch flattens ``(C, H, W)`` and TFLite ``(H, W, C)``.

Padding is mapped exactly: where PyTorch's symmetric padding is what TensorFlow's ``SAME`` does
the convolution uses ``SAME``; otherwise (TinyConv's ``(5, 3)`` on 49 frames pads 5 rows on top
where ``SAME`` pads 4) a ``ZeroPadding2D`` before a ``VALID`` convolution becomes a PAD op.

After conversion the flatten in front of the fully connected layer is dropped
(:func:`drop_flatten`): FULLY_CONNECTED reads the 4-D tensor directly, as in micro_speech's
model, which saves an arena buffer (1,424 bytes for TinyConv) and a copy per inference.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from kwscompress.errors import KwsError
from kwscompress.models.ds_cnn import DsCnn
from kwscompress.models.tiny_conv import TinyConv
from kwscompress.tf_import import import_tensorflow, native_stderr_filtered

CONVERTER_NOTICES = ("fully_quantize:",)
"""Lines the TFLite converter's quantizer prints to descriptor 2 on every conversion."""

CALIBRATION_CLIPS = 300
"""Representative clips the converter calibrates activation ranges on (at most)."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """The (before, after) padding TensorFlow's ``SAME`` applies along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def is_same(size: int, kernel: int, stride: int, pad: int) -> bool:
    """Whether PyTorch's symmetric ``pad`` computes exactly what ``SAME`` computes.

    Equal when both give the same output size and pad the same number of leading pixels
    (trailing pixels beyond the last window are never read).
    """
    torch_out = (size + 2 * pad - kernel) // stride + 1
    return torch_out == -(-size // stride) and pad == same_padding(size, kernel, stride)[0]


def _conv_padding(keras: Any, conv: nn.Conv2d, size: tuple[int, int]) -> tuple[list[Any], str]:
    """Layers to put before a Keras convolution and its padding mode, equal to ``conv``'s."""
    pad_h, pad_w = conv.padding  # type: ignore[misc]
    if (pad_h, pad_w) == (0, 0):
        return [], "valid"
    if all(
        is_same(n, k, s, p)
        for n, k, s, p in zip(size, conv.kernel_size, conv.stride, (pad_h, pad_w), strict=True)
    ):
        return [], "same"
    return [keras.layers.ZeroPadding2D(((pad_h, pad_h), (pad_w, pad_w)))], "valid"


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    """Convolution weight ``[out, in/groups, kh, kw]`` and bias with ``bn`` folded in."""
    weight = conv.weight.detach().double().numpy()
    bias = (
        conv.bias.detach().double().numpy()
        if conv.bias is not None
        else np.zeros(conv.out_channels)
    )
    if bn is not None:
        gamma = bn.weight.detach().double().numpy()
        beta = bn.bias.detach().double().numpy()
        mean = bn.running_mean.detach().double().numpy()
        var = bn.running_var.detach().double().numpy()
        factor = gamma / np.sqrt(var + bn.eps)
        weight = weight * factor[:, None, None, None]
        bias = (bias - mean) * factor + beta
    return weight.astype(np.float32), bias.astype(np.float32)


def _conv_layers(
    keras: Any, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, size: tuple[int, int]
) -> tuple[list[Any], tuple[int, int]]:
    """Keras layers (with weights) equal to ``conv`` (+ ``bn``) + ReLU on a ``size`` input."""
    weight, bias = _folded(conv, bn)
    before, padding = _conv_padding(keras, conv, size)
    common = {
        "kernel_size": conv.kernel_size,
        "strides": conv.stride,
        "padding": padding,
        "activation": "relu",
    }
    if conv.groups == 1:
        layer = keras.layers.Conv2D(conv.out_channels, **common)
        kernel = weight.transpose(2, 3, 1, 0)
    elif conv.groups == conv.in_channels == conv.out_channels:
        layer = keras.layers.DepthwiseConv2D(**common)
        kernel = weight.transpose(2, 3, 0, 1)
    else:
        raise ValueError(f"grouped convolution with {conv.groups} groups")
    out = tuple(
        (n + 2 * p - k) // s + 1
        for n, p, k, s in zip(size, conv.padding, conv.kernel_size, conv.stride, strict=True)  # type: ignore[arg-type]
    )
    return [*before, (layer, [kernel, bias])], out  # type: ignore[return-value]


def _dense(keras: Any, fc: nn.Linear, chw: tuple[int, int, int] | None) -> tuple[Any, list[Any]]:
    """A Dense layer equal to ``fc``; ``chw`` permutes columns from a (C, H, W) flatten."""
    weight = fc.weight.detach().numpy()
    if chw is not None:
        weight = weight.reshape(fc.out_features, *chw).transpose(0, 2, 3, 1)
    kernel = weight.reshape(fc.out_features, -1).T
    return keras.layers.Dense(fc.out_features), [kernel, fc.bias.detach().numpy()]


def _tiny_conv(keras: Any, model: TinyConv) -> list[Any]:
    frames, bins = model.input_shape
    layers, (height, width) = _conv_layers(keras, model.conv, None, (frames, bins))
    dense = _dense(keras, model.fc, (model.conv.out_channels, height, width))
    return [*layers, keras.layers.Reshape((-1,)), dense]


def _ds_cnn(keras: Any, model: DsCnn) -> list[Any]:
    size = model.input_shape
    layers: list[Any] = []
    stages = [model.stem, *(stage for block in model.blocks for stage in block)]
    for conv, bn, _relu in stages:
        more, size = _conv_layers(keras, conv, bn, size)
        layers += more
    return [
        *layers,
        keras.layers.AveragePooling2D(pool_size=size),
        keras.layers.Reshape((-1,)),
        _dense(keras, model.fc, None),
    ]


BUILDERS: dict[type[nn.Module], Callable[[Any, Any], list[Any]]] = {
    TinyConv: _tiny_conv,
    DsCnn: _ds_cnn,
}
"""Model classes the Keras route rebuilds, each with its layer builder."""

SUPPORTED = ", ".join(cls.__name__ for cls in BUILDERS) + " (float or pruned)"


def to_keras(model: nn.Module, variant_id: str) -> Any:
    """A batch-1 Keras model computing ``softmax(model(x))`` from flat ``[1, frames * bins]``.

    :param model: a plain float model (masks already folded, eval mode).
    :raises ~kwscompress.errors.KwsError: for a model class the route does not know.
    """
    builder = next((b for cls, b in BUILDERS.items() if type(model) is cls), None)
    if builder is None:
        raise KwsError(
            f"variant {variant_id!r}: the TFLite Keras route cannot export a "
            f"{type(model).__name__} model; it handles {SUPPORTED}"
        )
    keras = import_tensorflow().keras
    # Keras numbers the layers it names after every layer this process built before, and the
    # names become the file's tensor names: start afresh, so the bytes of a variant's file do
    # not depend on what was exported before it (or in which process).
    keras.backend.clear_session(free_memory=False)
    frames, bins = model.input_shape  # type: ignore[misc]
    inputs = keras.Input(shape=(frames * bins,), batch_size=1, name="features")
    x = keras.layers.Reshape((frames, bins, 1))(inputs)
    weighted = []
    for item in builder(keras, model):
        layer, weights = item if isinstance(item, tuple) else (item, None)
        x = layer(x)
        if weights is not None:
            weighted.append((layer, weights))
    outputs = keras.layers.Softmax()(x)
    keras_model = keras.Model(inputs, outputs)
    for layer, weights in weighted:
        layer.set_weights(weights)
    return keras_model


def convert(keras_model: Any, representative: np.ndarray) -> bytes:
    """Full-int8 TFLite bytes of ``keras_model``, calibrated on ``representative`` clips.

    Inputs and outputs are int8; convolution weights are int8 per output channel, fully
    connected weights int8 per tensor, biases int32.
    """
    tf = import_tensorflow()
    clips = np.asarray(representative, np.float32)
    clips = clips.reshape(len(clips), -1)[:CALIBRATION_CLIPS]

    def dataset() -> Any:
        for clip in clips:
            yield [clip[np.newaxis]]

    # Keras prints the saved model's signature to stdout, and the converter warns that input
    # statistics are missing although the representative dataset supplies them.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # One scale for a fully connected layer's weights: TFLM computed per-channel ones with
        # the first scale only (wrong outputs, no error) until tflite-micro PR #2673 (Sep 2024),
        # and the Arduino TFLM library predates it. Convolutions stay per channel.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        # The MLIR quantizer prints its settings ("fully_quantize: 0, ...") to descriptor 2.
        with native_stderr_filtered(CONVERTER_NOTICES):
            flatbuffer = bytes(converter.convert())
        return drop_flatten(flatbuffer)


def drop_flatten(model: bytes) -> bytes:
    """``model`` without RESHAPE ops whose only reader is a FULLY_CONNECTED's input.

    FULLY_CONNECTED flattens its input itself (micro_speech's model feeds it the convolution's
    4-D output), so the flatten the converter keeps is a copy that costs an arena buffer and a
    memcpy per inference. Values and quantization do not change: a RESHAPE keeps both.
    """
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    edited = model_editor.read(model)
    graph = edited.subgraphs[0]
    dropped = []
    for op in list(graph.operators):
        flat = op.outputs[0]
        readers = graph.consumers_of(flat)
        if (
            op.opcode_name != "RESHAPE"
            or flat in graph.outputs
            or len(readers) != 1
            or readers[0].opcode_name != "FULLY_CONNECTED"
            or readers[0].inputs[0] is not flat
        ):
            continue
        readers[0].inputs[0] = op.inputs[0]
        graph.operators.remove(op)
        dropped += [flat, *(t for t in op.inputs[1:] if t is not None)]
    if not dropped:
        return model
    # Signature defs name tensors by index: re-point them after the removal.
    signatures = edited._fb.signatureDefs or []
    kept = [
        t
        for t in graph.tensors
        if not any(t is d for d in dropped)
        and (
            t in graph.inputs
            or t in graph.outputs
            or any(t in o.inputs or t in o.outputs for o in graph.operators)
        )
    ]
    for signature in signatures:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            entry.tensorIndex = kept.index(graph.tensors[entry.tensorIndex])
    graph.tensors = kept
    model_editor.prune_buffers(edited)
    return bytes(edited.build())
