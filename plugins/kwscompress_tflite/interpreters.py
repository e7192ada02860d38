"""Running a ``.tflite`` file: TFLM (what the board runs) and TensorFlow Lite, and reading it.

Both interpreters get the same int8 input, quantized the way the firmware does it
(``round(x / scale) + zero_point``, saturated to int8). TensorFlow Lite runs without its default
XNNPACK delegate (XNNPACK rounds some int8 results differently, one LSB) and with its
reference kernels, whose arithmetic TFLM's kernels share; its optimized built-in kernels differ
from TFLM by one LSB on a few clips (their int8 softmax uses a lookup table).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from kwscompress.intgraph import int8_codes
from kwscompress.tf_import import import_tensorflow

WEIGHTED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
"""Ops whose inputs 1 and 2 are weights and bias."""
_ROLES = {1: "weights", 2: "bias"}

DEFAULT_ARENA_BYTES = 1 << 20
"""Arena of the verification run (generous; the smallest that works is searched separately)."""


@dataclass
class TensorInfo:
    """Shape, type and quantization of a model input or output."""

    shape: list[int]
    dtype: str
    scale: float
    zero_point: int


@dataclass
class ModelFacts:
    """What a ``.tflite`` file contains, read from its flatbuffer."""

    ops: list[str]
    """Builtin op names, in execution order."""
    input: TensorInfo
    output: TensorInfo
    logits_index: int | None
    """Tensor index of the last op's input (the logits before the softmax)."""
    aligned: bool
    """Whether every buffer's data starts at a multiple of 16 bytes (the schema's
    ``force_align: 16``; misaligned int32 biases can fault on Cortex-M)."""
    weights: list[dict[str, Any]]
    """Constant tensors read by the ops: ``name``, ``dtype``, ``shape``, ``scales`` (count),
    ``axis`` (quantized dimension), ``bytes`` and ``role`` (``weights``, ``bias`` or ``other``:
    the input position of a CONV/FC op, shapes and paddings elsewhere)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the variant's record."""
        return {
            "ops": self.ops,
            "input": vars(self.input),
            "output": vars(self.output),
            "buffers_aligned_16": self.aligned,
        }


def read_model(model: bytes) -> ModelFacts:
    """Op list, input/output quantization and constant tensors of a ``.tflite`` file."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor, tensor_type

    graph = model_editor.read(model).subgraphs[0]

    def info(tensor: Any) -> TensorInfo:
        quant = tensor.quantization
        scales = np.atleast_1d(quant.scales) if quant else [0.0]
        zeros = np.atleast_1d(quant.zero_points) if quant else [0]
        return TensorInfo(
            shape=[int(n) for n in tensor.shape],
            dtype=np.dtype(tensor_type.to_numpy(tensor.dtype)).name,
            scale=float(scales[0]),
            zero_point=int(zeros[0]),
        )

    weights = []
    for op in graph.operators:
        for position, tensor in enumerate(op.inputs):
            if tensor is None or tensor.buffer is None or not tensor.buffer.data:
                continue
            quant = tensor.quantization
            weights.append(
                {
                    "op": op.opcode_name,
                    "name": tensor.name,
                    "role": _ROLES.get(position, "other")
                    if op.opcode_name in WEIGHTED
                    else "other",
                    "dtype": np.dtype(tensor_type.to_numpy(tensor.dtype)).name,
                    "shape": [int(n) for n in tensor.shape],
                    "scales": int(np.size(quant.scales)) if quant else 0,
                    "bytes": len(tensor.buffer.data),
                    "axis": quant.axis if quant else None,
                }
            )
    return ModelFacts(
        ops=[op.opcode_name for op in graph.operators],
        input=info(graph.inputs[0]),
        output=info(graph.outputs[0]),
        logits_index=graph.operators[-1].inputs[0].index if graph.operators else None,
        aligned=_buffers_aligned(model),
        weights=weights,
    )


def _buffers_aligned(model: bytes) -> bool:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = bytes(model)
    start = np.frombuffer(model, np.uint8).ctypes.data
    root = schema.Model.GetRootAsModel(model, 0)
    for index in range(root.BuffersLength()):
        buffer = root.Buffers(index)
        # DataAsNumpy is a view into ``model``: its address gives the data's offset.
        if buffer.DataLength() and (buffer.DataAsNumpy().ctypes.data - start) % 16:
            return False
    return True


def quantize_input(features: np.ndarray, facts: ModelFacts) -> np.ndarray:
    """Features ``[N, frames, bins]`` as the int8 model input, one row per clip.

    The codes of :func:`kwscompress.intgraph.int8_codes`, laid out as the model's input.
    """
    codes = int8_codes(features, facts.input.scale, facts.input.zero_point)
    return codes.reshape(len(features), *facts.input.shape[1:])


def run_tflm(
    model: bytes, inputs: np.ndarray, arena_bytes: int = DEFAULT_ARENA_BYTES
) -> np.ndarray:
    """Outputs of TFLM (reference kernels) for each row of ``inputs``, one invoke per clip."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_bytes)
    outputs = []
    for clip in inputs:
        interpreter.set_input(clip[np.newaxis], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
    return np.stack(outputs)


def run_tflm_keeping(
    model: bytes, inputs: np.ndarray, tensor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of TFLM and the int8 values of tensor ``tensor`` (flattened) for each clip.

    Runs with every tensor preserved (``kPreserveAllTensors``), which changes the memory plan,
    not the arithmetic.
    """
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(
        bytes(model),
        arena_size=DEFAULT_ARENA_BYTES,
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors,
    )
    outputs, values = [], []
    for clip in inputs:
        interpreter.set_input(clip[np.newaxis], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
        values.append(interpreter.GetTensor(tensor, 0)["tensor_data"].reshape(-1).copy())
    return np.stack(outputs), np.stack(values)


def run_tflite(model: bytes, inputs: np.ndarray, reference_kernels: bool = True) -> np.ndarray:
    """Outputs of TensorFlow Lite, without XNNPACK, for each row of ``inputs``.

    :param reference_kernels: TFLite's reference kernels (the arithmetic TFLM's kernels share);
        otherwise its optimized built-in kernels, whose int8 softmax uses a lookup table and
        can differ from TFLM by one LSB.
    """
    tf = import_tensorflow()
    kinds = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its move to ai_edge_litert; it still runs here.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(
            model_content=bytes(model),
            experimental_op_resolver_type=(
                kinds.BUILTIN_REF if reference_kernels else kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for clip in inputs:
        interpreter.set_tensor(input_index, clip[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(outputs)
