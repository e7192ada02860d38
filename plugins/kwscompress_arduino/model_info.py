"""What the sketch needs to know about a ``.tflite`` file, read from its flatbuffer.

The file is parsed with the schema classes that TFLM's Python package ships
(``tflite_micro``'s generated ``schema_py_generated``, no TensorFlow import). From it come the
ops the interpreter must register, and the scale and zero point of the input and output tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwscompress.errors import KwsError

SUPPORTED_OPS = frozenset(
    {
        "ADD", "ARG_MAX", "AVERAGE_POOL_2D", "BATCH_TO_SPACE_ND", "CONCATENATION", "CONV_2D",
        "DEPTHWISE_CONV_2D", "DEQUANTIZE", "EXPAND_DIMS", "FULLY_CONNECTED", "HARD_SWISH",
        "L2_NORMALIZATION", "LEAKY_RELU", "LOGISTIC", "LOG_SOFTMAX", "MAX_POOL_2D", "MEAN",
        "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6", "RESHAPE", "SHAPE",
        "SOFTMAX", "SPACE_TO_BATCH_ND", "SQUEEZE", "STRIDED_SLICE", "SUB", "SVDF", "TANH",
        "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK",
    }
)  # fmt: skip
"""Builtin ops the sketch can register. For each, ``MicroMutableOpResolver`` has a method named
``Add`` + the op name in CamelCase (``DEPTHWISE_CONV_2D`` -> ``AddDepthwiseConv2D``)."""


@dataclass(frozen=True)
class TensorInfo:
    """Shape, type and (per-tensor) quantization of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    """The TFLite type name: ``INT8``, ``FLOAT32``, ..."""
    scale: float | None
    zero_point: int | None

    @property
    def elements(self) -> int:
        """Number of values in the tensor."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class ModelInfo:
    """The facts of a ``.tflite`` file that the firmware depends on."""

    data: bytes
    ops: tuple[str, ...]
    """Builtin op names in order of first use."""
    input: TensorInfo
    output: TensorInfo

    @property
    def resolver_methods(self) -> tuple[str, ...]:
        """``MicroMutableOpResolver`` method names, one per op."""
        return tuple(resolver_method(op) for op in self.ops)


def resolver_method(op: str) -> str:
    """The ``MicroMutableOpResolver`` method that registers the builtin op ``op``."""
    # "2D" stays as it is; every other part is capitalised ("RELU6" -> "Relu6").
    return "Add" + "".join(p if p[:1].isdigit() else p.capitalize() for p in op.split("_"))


def read_model(path: Path) -> ModelInfo:
    """Parse a ``.tflite`` file.

    :raises KwsError: the file is missing or not a TFLite flatbuffer, it has more or fewer than
        one input and one output, or it uses a custom op or an op the sketch cannot register.
    """
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KwsError(f"cannot read the model {path}: {exc.strerror}") from exc
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise KwsError(f"{path} is not a TFLite model (no 'TFL3' identifier at byte 4)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside
        raise KwsError(f"{path} is not a readable TFLite flatbuffer: {exc}") from exc
    try:
        return _model_info(schema, model, data, path)
    except (TypeError, IndexError, AttributeError, ValueError) as exc:
        # A flatbuffer that parses but lacks tables (no subgraph, tensors, inputs, codes).
        raise KwsError(
            f"{path} is not a complete TFLite model: {type(exc).__name__}: {exc}"
        ) from exc


def _model_info(schema: Any, model: Any, data: bytes, path: Path) -> ModelInfo:
    op_names = {value: key for key, value in vars(schema.BuiltinOperator).items() if key.isupper()}
    type_names = {value: key for key, value in vars(schema.TensorType).items() if key.isupper()}
    codes = model.operatorCodes or []
    ops: list[str] = []
    for subgraph in model.subgraphs or []:
        for operator in subgraph.operators or []:
            code = codes[operator.opcodeIndex]
            # Files from old converters keep the code in the deprecated int8 field.
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names.get(builtin, f"builtin code {builtin}")
            if name == "CUSTOM":
                custom = (code.customCode or b"").decode("utf-8", "replace")
                raise KwsError(f"{path} uses the custom op {custom!r}; the sketch cannot run it")
            if name not in ops:
                ops.append(name)
    unsupported = [op for op in ops if op not in SUPPORTED_OPS]
    if unsupported:
        raise KwsError(
            f"{path} uses {', '.join(unsupported)}, which the Arduino sketch cannot register; "
            f"supported ops: {', '.join(sorted(SUPPORTED_OPS))}"
        )
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise KwsError(
            f"{path} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; the sketch "
            "needs a model with one input (features) and one output (class scores)"
        )

    def tensor(index: int) -> TensorInfo:
        t = graph.tensors[index]
        q = t.quantization
        scale = (
            float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else None
        )
        zero = (
            int(q.zeroPoint[0])
            if q is not None and q.zeroPoint is not None and len(q.zeroPoint)
            else None
        )
        return TensorInfo(
            name=(t.name or b"").decode("utf-8", "replace"),
            shape=tuple(int(d) for d in t.shape),
            dtype=type_names.get(t.type, str(t.type)),
            scale=scale,
            zero_point=zero,
        )

    return ModelInfo(data, tuple(ops), tensor(graph.inputs[0]), tensor(graph.outputs[0]))
