"""The numpy reference interpreter of IntGraph: TFLite's int8 arithmetic, checked three ways.

1. The fixed-point helpers against a plain-Python transcription of TFLite's C code.
2. Each op against a direct nested-loop implementation of TFLite's reference kernel.
3. The whole interpreter against TensorFlow Lite's own reference kernels, on TFLM's
   micro_speech model (tests/data/micro_speech_quantized.tflite).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kwscompress.intgraph import IntGraph, IntLayer, QuantParams
from kwscompress.intgraph_reference import (
    multiply_by_quantized_multiplier,
    quantize_input,
    quantize_multiplier,
    run_int_graph,
    trace_int_graph,
)

MICRO_SPEECH = Path(__file__).parent / "data" / "micro_speech_quantized.tflite"


# -- transcriptions of TFLite's C++ (tensorflow/lite/kernels/internal/common.h), scalar ints --


def _high_mul(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = 1 << 30 if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    return abs(total) // (1 << 31) * (1 if total >= 0 else -1)  # C division truncates


def _divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def _c_multiply(x: int, multiplier: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return _divide_by_pot(_high_mul(x * (1 << left), multiplier), right)


def test_quantize_multiplier_known_values_and_precision() -> None:
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-40) == (0, 0)  # below 2**-32: TFLite gives up
    rng = np.random.default_rng(0)
    for real in rng.uniform(1e-6, 4.0, 200):
        q, shift = quantize_multiplier(float(real))
        assert 1 << 30 <= q < 1 << 31
        assert math.isclose(q * 2.0 ** (shift - 31), real, rel_tol=2**-30)


def test_multiply_by_quantized_multiplier_matches_tflite_c_code() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        multiplier, shift = quantize_multiplier(
            float(rng.uniform(0.01, 2.5) * 2.0 ** rng.integers(-14, 2))
        )
        x = rng.integers(-(2**22), 2**22, 16)
        x[:4] = [0, -1, 1, rng.integers(-300, 300)]
        got = multiply_by_quantized_multiplier(x, np.array([multiplier]), np.array([shift]))
        assert got.tolist() == [_c_multiply(int(v), multiplier, shift) for v in x]


def test_multiply_rounds_twice_as_tflm_does() -> None:
    # 0.25 is 2**30 with shift -1: the high multiply rounds x / 2 (half up), then the shift
    # rounds that half away from zero. 5 * 0.25 = 1.25 becomes 2.5 -> 3, then 1.5 -> 2.
    multiplier, shift = quantize_multiplier(0.25)
    x = np.array([2, -2, 6, -6, 5, -5, 4, -4])
    got = multiply_by_quantized_multiplier(x, np.array([multiplier]), np.array([shift]))
    assert got.tolist() == [1, -1, 2, -2, 2, -1, 1, -1]


# -- each op against a nested-loop version of TFLite's reference kernel ---------------------


def _loop_conv(
    x, in_zp, weights, bias, multipliers, out_zp, stride, padding, out_shape, relu, depthwise
):
    n, in_h, in_w, in_c = x.shape
    _, out_h, out_w, out_c = out_shape
    top, _, left, _ = padding
    out = np.zeros((n, out_h, out_w, out_c), np.int64)
    kh, kw = weights.shape[1:3]
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for oc in range(out_c):
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * stride[0] - top + ky, ox * stride[1] - left + kx
                            if not (0 <= iy < in_h and 0 <= ix < in_w):
                                continue  # TFLite skips padded taps
                            if depthwise:
                                ic = oc // (out_c // in_c)
                                acc += int(weights[0, ky, kx, oc]) * (int(x[b, iy, ix, ic]) - in_zp)
                            else:
                                for ic in range(in_c):
                                    acc += int(weights[oc, ky, kx, ic]) * (
                                        int(x[b, iy, ix, ic]) - in_zp
                                    )
                    acc += int(bias[oc])
                    value = _c_multiply(acc, *multipliers[oc]) + out_zp
                    low = max(-128, out_zp) if relu else -128
                    out[b, oy, ox, oc] = min(127, max(low, value))
    return out


def _graph(input_shape, input_params, layer) -> IntGraph:
    return IntGraph(input_shape=input_shape, input=input_params, layers=[layer])


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_convolutions_match_the_loop_kernel(depthwise: bool, relu: bool) -> None:
    rng = np.random.default_rng(2)
    in_c, out_c, kernel, stride, padding = (2, 4, (3, 2), (2, 1), (1, 2, 0, 1))
    x = rng.integers(-128, 128, (3, 7, 6, in_c)).astype(np.int8)
    shape = (1, (7 + 3 - 3) // 2 + 1, (6 + 1 - 2) // 1 + 1, out_c)
    weights = rng.integers(-127, 128, (1, *kernel, out_c) if depthwise else (out_c, *kernel, in_c))
    params = QuantParams(0.05, -7)
    layer = IntLayer(
        op="depthwise_conv2d" if depthwise else "conv2d",
        output=QuantParams(0.2, 3),
        output_shape=shape,
        weights=weights.astype(np.int8),
        weight_scale=rng.uniform(0.001, 0.02, out_c).astype(np.float32),
        bias=rng.integers(-5000, 5000, out_c).astype(np.int32),
        stride=stride,
        padding=padding,
        fused_relu=relu,
    )
    multipliers = [
        quantize_multiplier(float(np.float32(0.05)) * float(w) / float(np.float32(0.2)))
        for w in layer.weight_scale
    ]
    expected = _loop_conv(
        x, -7, weights, layer.bias, multipliers, 3, stride, padding, shape, relu, depthwise
    )
    got = run_int_graph(_graph((1, 7, 6, in_c), params, layer), x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_fully_connected_uses_the_float32_scale_product_and_saturates() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (5, 2, 3, 4)).astype(np.int8)
    weights = rng.integers(-127, 128, (3, 24)).astype(np.int8)
    bias = np.array([100, -2000, 0], np.int32)
    layer = IntLayer(
        op="fully_connected",
        output=QuantParams(0.01, -2),
        output_shape=(1, 3),
        weights=weights,
        weight_scale=np.full(3, 0.003, np.float32),
        bias=bias,
    )
    got = run_int_graph(_graph((1, 2, 3, 4), QuantParams(0.1, 5), layer), x)
    multiplier = quantize_multiplier(
        float(np.float32(0.1) * np.float32(0.003)) / float(np.float32(0.01))
    )
    flat = x.reshape(5, -1).astype(np.int64) - 5
    accumulator = flat @ weights.T.astype(np.int64) + bias
    expected = [
        [min(127, max(-128, _c_multiply(int(a), *multiplier) - 2)) for a in row]
        for row in accumulator
    ]
    assert got.tolist() == expected
    assert (got == 127).any() or (got == -128).any()  # the random weights saturate some outputs


def test_average_pool_rounds_half_away_from_zero_and_keeps_quantization() -> None:
    params = QuantParams(0.5, -128)
    x = np.array([[-3, -2], [4, 5]], np.int8).reshape(1, 2, 2, 1)
    pool = IntLayer(
        op="average_pool2d", output=params, output_shape=(1, 2, 1, 1), pool=(1, 2), stride=(1, 2)
    )
    got = run_int_graph(_graph((1, 2, 2, 1), params, pool), x)
    assert got.ravel().tolist() == [-3, 5]  # -2.5 -> -3, 4.5 -> 5
    pool.output = QuantParams(0.25, -128)
    with pytest.raises(ValueError, match="keeps its input's quantization"):
        run_int_graph(_graph((1, 2, 2, 1), params, pool), x)


def test_softmax_output_is_probabilities_at_one_256th() -> None:
    params = QuantParams(0.1, 0)
    layer = IntLayer(op="softmax", output=QuantParams(1 / 256, -128), output_shape=(1, 3))
    x = np.array([[0, 0, 0], [100, 0, -100], [-128, -128, 127]], np.int8)
    got = run_int_graph(_graph((1, 1, 1, 3), params, layer), x.reshape(3, 1, 1, 3)).astype(int)
    assert got[0].tolist() == [round(256 / 3) - 128] * 3
    assert got[1, 0] == 127 and got[1, 2] == -128  # probability 1 saturates at 127
    assert got[2].argmax() == 2


def test_quantize_input_rounds_in_float32_and_saturates() -> None:
    graph = IntGraph(input_shape=(1, 1, 4, 1), input=QuantParams(0.1, -128))
    got = quantize_input(graph, np.array([[[0.0, 1.04, 26.0, -1.0]]]))
    assert got.dtype == np.int8
    assert got.ravel().tolist() == [-128, -118, 127, -128]


def test_inputs_must_be_int8_whole_clips() -> None:
    graph = IntGraph(input_shape=(1, 2, 2, 1), input=QuantParams(0.1, 0))
    with pytest.raises(ValueError, match="int8"):
        run_int_graph(graph, np.zeros((1, 2, 2), np.int32))
    with pytest.raises(ValueError, match="whole"):
        run_int_graph(graph, np.zeros((5,), np.int8))


# -- against TFLM, the runtime the device runs --------------------------------------------------


def _micro_speech_graph(model) -> IntGraph:
    """TFLM's micro_speech model (a flatbuffer object) as an IntGraph."""
    graph = model.subgraphs[0]
    tensors = {t.name.decode(): t for t in graph.tensors}
    dtypes = {"Conv2D_bias": np.int32, "MatMul_bias": np.int32}

    def params(name: str) -> QuantParams:
        q = tensors[name].quantization
        return QuantParams(float(q.scale[0]), int(q.zeroPoint[0]))

    def value(name: str) -> np.ndarray:
        data = bytes(model.buffers[tensors[name].buffer].data)
        return np.frombuffer(data, dtypes.get(name, np.int8)).reshape(tensors[name].shape)

    def scales(name: str, count: int) -> np.ndarray:
        return np.broadcast_to(tensors[name].quantization.scale, (count,)).astype(np.float32)

    # SAME padding of a 10 x 8 kernel, stride 2, on 49 x 40: 9 rows (4 top, 5 bottom), 6 columns
    layers = [
        IntLayer(
            op="depthwise_conv2d",
            output=params("Relu"),
            output_shape=(1, 25, 20, 8),
            weights=value("first_weights/read"),
            weight_scale=scales("first_weights/read", 8),
            bias=value("Conv2D_bias"),
            stride=(2, 2),
            padding=(4, 5, 3, 3),
            fused_relu=True,
        ),
        IntLayer(
            op="fully_connected",
            output=params("add_1"),
            output_shape=(1, 4),
            weights=value("final_fc_weights/read/transpose"),
            weight_scale=scales("final_fc_weights/read/transpose", 4),
            bias=value("MatMul_bias"),
        ),
        IntLayer(op="softmax", output=params("labels_softmax"), output_shape=(1, 4)),
    ]
    return IntGraph(input_shape=(1, 49, 40, 1), input=params("Reshape_1"), layers=layers)


def test_matches_tflm_on_micro_speech() -> None:
    """Every int8 tensor of TFLM's micro_speech model, computed by TFLM's own kernels."""
    from tflite_micro import runtime

    model = runtime.convert_bytearray_to_object(bytearray(MICRO_SPEECH.read_bytes()))
    graph = _micro_speech_graph(model)
    interpreter = runtime.Interpreter.from_file(
        str(MICRO_SPEECH), intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
    )
    index = {t.name.decode(): i for i, t in enumerate(model.subgraphs[0].tensors)}
    rng = np.random.default_rng(4)
    # feature-like clips (mostly quiet codes), then uniform noise, which drives more of the
    # logits into ties of TFLM's double rounding (the 24th clip here is one)
    inputs = np.clip(rng.normal(-90, 40, (24, 49, 40)), -128, 127).astype(np.int8)
    inputs[12:] = rng.integers(-128, 128, (12, 49, 40))
    ours = trace_int_graph(graph, inputs)
    for clip, features in enumerate(inputs):
        interpreter.set_input(features.reshape(1, 1960), 0)
        interpreter.invoke()
        for layer, name in enumerate(("Relu", "add_1", "labels_softmax")):
            theirs = interpreter.GetTensor(index[name], 0)["tensor_data"]
            np.testing.assert_array_equal(
                ours[layer][clip], theirs[0], err_msg=f"clip {clip}, tensor {name}"
            )
