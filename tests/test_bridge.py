"""The Brevitas-to-TFLite bridge: an IntGraph written as a .tflite file, run in TFLM.

The graphs here are built by hand from a float TinyConv (per-channel int8 weights, int32 biases,
activation ranges from calibration clips), so the bridge is tested without any quantization
library. TFLM's outputs are compared with a plain numpy computation of the same integer model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.compression import model_editor
from torch import nn

from kwscompress.errors import KwsError
from kwscompress.intgraph import IntGraph, IntLayer, QuantParams
from kwscompress.models.tiny_conv import TinyConv
from kwscompress.protocols import ExportInputs
from kwscompress_tflite.bridge import int_graph_to_tflite
from kwscompress_tflite.interpreters import read_model, run_tflite

SHAPE = (49, 40)


def _activation_quant(low: float, high: float) -> QuantParams:
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255
    return QuantParams(scale, round(-128 - low / scale))


def _weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 values and scales of ``weight`` ``[out, ...]``."""
    scale = np.abs(weight).reshape(len(weight), -1).max(axis=1) / 127
    values = np.round(weight / scale.reshape(-1, *[1] * (weight.ndim - 1)))
    return values.astype(np.int8), scale.astype(np.float32)


def quantize_tiny_conv(model: TinyConv, calibration: np.ndarray) -> IntGraph:
    """An IntGraph of ``model``, calibrated on ``calibration`` features ``[N, frames, bins]``."""
    x = torch.from_numpy(calibration)
    with torch.no_grad():
        conv = torch.relu(model.conv(x.reshape(-1, 1, *SHAPE)))
        logits = model.fc(torch.flatten(conv, 1))
    features = _activation_quant(0.0, float(x.max()))
    conv_q = _activation_quant(0.0, float(conv.max()))
    logits_q = _activation_quant(float(logits.min()), float(logits.max()))
    channels, height, width = conv.shape[1:]

    conv_w, conv_s = _weights(model.conv.weight.detach().numpy().transpose(0, 2, 3, 1))
    fc = model.fc.weight.detach().numpy()
    fc = fc.reshape(len(fc), channels, height, width).transpose(0, 2, 3, 1).reshape(len(fc), -1)
    fc_w, fc_s = _weights(fc)

    def bias(values: torch.Tensor, in_scale: float, scales: np.ndarray) -> np.ndarray:
        real = values.detach().numpy().astype(np.float64)
        return np.round(real / (np.float32(in_scale) * scales)).astype(np.int32)

    return IntGraph(
        input_shape=(1, *SHAPE, 1),
        input=features,
        layers=[
            IntLayer(
                "conv2d",
                conv_q,
                (1, height, width, channels),
                weights=conv_w,
                weight_scale=conv_s,
                bias=bias(model.conv.bias, features.scale, conv_s),
                stride=(2, 2),
                padding=(5, 5, 3, 3),
                fused_relu=True,
                name="conv",
            ),
            IntLayer(
                "fully_connected",
                logits_q,
                (1, len(fc)),
                weights=fc_w,
                weight_scale=fc_s,
                bias=bias(model.fc.bias, conv_q.scale, fc_s),
                name="fc",
            ),
            IntLayer("softmax", QuantParams(1 / 256, -128), (1, len(fc)), name="softmax"),
        ],
    )


def _requantize(acc: np.ndarray, multiplier: float, quant: QuantParams, relu: bool) -> np.ndarray:
    q = np.round(acc * multiplier) + quant.zero_point
    return np.clip(q, quant.zero_point if relu else -128, 127).astype(np.int64)


def simulate(graph: IntGraph, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits (int8) and softmax outputs (int8) of ``graph``: integer sums, float rescaling."""
    conv, fc, _ = graph.layers
    x = graph.input.quantize(features).astype(np.int64) - graph.input.zero_point
    top, bottom, left, right = conv.padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    _, kh, kw, _ = conv.weights.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, :: conv.stride[0], :: conv.stride[1]]
    acc = np.einsum("nhwij,cij->nhwc", windows, conv.weights[..., 0].astype(np.int64))
    scale_in = np.float32(graph.input.scale)
    hidden = _requantize(
        acc + conv.bias,
        scale_in * conv.weight_scale / np.float32(conv.output.scale),
        conv.output,
        True,
    )
    hidden = hidden.reshape(len(hidden), -1) - conv.output.zero_point
    acc = hidden @ fc.weights.astype(np.int64).T + fc.bias
    logits = _requantize(
        acc,
        np.float32(conv.output.scale) * fc.weight_scale / np.float32(fc.output.scale),
        fc.output,
        False,
    )
    real = fc.output.dequantize(logits)
    probabilities = np.exp(real - real.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return logits, np.clip(np.round(probabilities * 256) - 128, -128, 127).astype(np.int64)


@pytest.fixture(scope="module")
def case() -> tuple[IntGraph, np.ndarray]:
    torch.manual_seed(0)
    model = TinyConv(SHAPE, 4, channels=3).eval()
    features = np.random.default_rng(0).uniform(0, 26, (40, *SHAPE)).astype(np.float32)
    return quantize_tiny_conv(model, features), features


def _tflm(model: bytes, inputs: np.ndarray, tensor: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLM's outputs and the int8 values of tensor index ``tensor`` per clip."""
    interpreter = runtime.Interpreter.from_bytes(
        model, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
    )
    outputs, hidden = [], []
    for clip in inputs:
        interpreter.set_input(clip[np.newaxis], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
        hidden.append(interpreter.GetTensor(tensor, 0)["tensor_data"].reshape(-1).copy())
    return np.stack(outputs), np.stack(hidden)


def test_bridge_writes_the_graphs_integers_and_tflm_computes_the_integer_model(case) -> None:
    graph, features = case
    model = int_graph_to_tflite(graph, "hand-made")
    facts = read_model(model)
    assert facts.ops == ["RESHAPE", "PAD", "CONV_2D", "FULLY_CONNECTED", "SOFTMAX"]
    assert facts.input.shape == [1, 49 * 40] and facts.input.dtype == "int8"
    assert facts.aligned  # every buffer at a multiple of 16 bytes, as the schema asks
    assert facts.input.scale == pytest.approx(graph.input.scale, rel=1e-6)
    assert (facts.output.scale, facts.output.zero_point) == (1 / 256, -128)
    conv = next(w for w in facts.weights if w["op"] == "CONV_2D" and w["role"] == "weights")
    assert conv["dtype"] == "int8" and conv["scales"] == 3 and conv["axis"] == 0

    inputs = graph.input.quantize(features).reshape(len(features), -1)
    logits_index = model_editor.read(model).subgraphs[0].tensor_by_name("fc").index
    outputs, logits = _tflm(model, inputs, logits_index)
    want_logits, want_outputs = simulate(graph, features)
    assert logits.shape == want_logits.shape
    # Integer sums are exact; only the rescaling differs (TFLite's fixed-point multiplier vs a
    # float product), which can move a value that sits on a rounding tie by one.
    assert np.abs(logits - want_logits).max() <= 1
    assert (logits != want_logits).mean() < 0.05
    assert np.abs(outputs.astype(np.int64) - want_outputs).max() <= 2
    assert np.array_equal(outputs, run_tflite(model, inputs))


def test_bridge_matches_the_reference_interpreter_bit_for_bit(case) -> None:
    reference = pytest.importorskip("kwscompress.intgraph_reference")
    graph, features = case
    model = int_graph_to_tflite(graph, "hand-made")
    codes = reference.quantize_input(graph, features)
    logits_index = model_editor.read(model).subgraphs[0].tensor_by_name("fc").index
    outputs, logits = _tflm(model, codes.reshape(len(codes), -1), logits_index)
    *_, want_logits, want_outputs = reference.trace_int_graph(graph, codes)
    assert np.array_equal(logits, want_logits)
    # The reference's softmax is float; TFLite's fixed-point exponential can differ by one.
    assert np.abs(outputs.astype(np.int64) - want_outputs).max() <= 1


def test_bridge_names_the_variant_and_layer_it_cannot_write(case) -> None:
    graph, _ = case
    broken = dataclasses.replace(graph, layers=[*graph.layers])
    broken.layers[0] = dataclasses.replace(graph.layers[0], padding=(9, 9, 3, 3))
    with pytest.raises(KwsError, match=r"variant 'qat-4b'.*layer 0 \(conv2d 'conv'\)"):
        int_graph_to_tflite(broken, "qat-4b")
    too_wide = dataclasses.replace(graph, layers=[*graph.layers])
    too_wide.layers[1] = dataclasses.replace(graph.layers[1], weights=graph.layers[1].weights * 2.0)
    with pytest.raises(KwsError, match=r"layer 1 \(fully_connected 'fc'\).*\[-128, 127\]"):
        int_graph_to_tflite(too_wide, "qat-4b")
    no_softmax = dataclasses.replace(graph, layers=graph.layers[:2])
    with pytest.raises(KwsError, match="ends in a softmax"):
        int_graph_to_tflite(no_softmax, "qat-4b")


class HandQuantized(nn.Module):
    """A quantized model as the exporter sees one: ``int_graph()`` and logits from forward."""

    def __init__(self, graph: IntGraph) -> None:
        super().__init__()
        self.graph = graph

    def int_graph(self) -> IntGraph:
        return self.graph

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits, _ = simulate(self.graph, features.numpy())
        return torch.from_numpy(self.graph.layers[-2].output.dequantize(logits))


def _export_inputs(model: nn.Module, features: np.ndarray, bits: int) -> ExportInputs:
    return ExportInputs(
        variant_id=f"hand-{bits}b",
        model=model,
        weight_bits=bits,
        labels=["_silence_", "_unknown_", "yes", "no"],
        input_shape=SHAPE,
        representative=features,
        test_features=features,
        test_labels=np.zeros(len(features), np.int64),
    )


def test_tflite_exporter_takes_the_bridge_for_a_quantized_model(pm, case, tmp_path) -> None:
    graph, features = case
    exporter = pm.component("exporter", "tflite")
    inputs = _export_inputs(HandQuantized(graph), features, bits=4)
    assert exporter.applies_to(inputs)
    assert not pm.component("exporter", "onnx").applies_to(inputs)
    record = exporter.export(inputs, tmp_path)
    assert record["route"] == "bridge"
    assert (tmp_path / record["files"]["tflite"]).read_bytes() == int_graph_to_tflite(
        graph, "hand-4b"
    )
    assert record["tflm_vs_tflite"]["outputs_differ"] == 0
    assert record["model_agreement"]["compared_with"] == "quantized model (PyTorch)"
    assert record["model_agreement"]["top1_agree"] >= 0.99
    # Bit for bit with the reference interpreter up to the softmax (which it computes in float).
    assert record["tflm_vs_int_graph"]["logits_differ"] == 0
    assert record["tflm_vs_int_graph"]["outputs_max_abs_diff"] <= 1
    assert record["stored_weight_bits"] == 8 and "stored as int8" in record["note"]
    assert record["arena_bytes"] > 0


def test_brevitas_ptq_variant_exports_with_its_own_predictions(pm, tmp_path) -> None:
    pytest.importorskip("brevitas")
    from kwscompress.compress.context import StepContext
    from kwscompress.config import TrainConfig
    from kwscompress.train import LabeledFeatures

    try:
        quantizer = pm.component("quantizer", "ptq")
    except KwsError:
        pytest.skip("the ptq quantizer is not registered yet")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 26, (64, *SHAPE)).astype(np.float32)
    labels = rng.integers(0, 4, 64)
    data = LabeledFeatures(features, labels)
    context = StepContext(
        train=data,
        validation=data,
        labels=["_silence_", "_unknown_", "yes", "no"],
        train_config=TrainConfig(),
        finetune_learning_rate=1e-4,
        seed=0,
    )
    settings = quantizer.settings(
        {"bits": 8, "calibration_batches": 2, "calibration_batch_size": 32}
    )
    qmodel = quantizer.quantize(TinyConv(SHAPE, 4).eval(), context, **settings).model.eval()
    record = pm.component("exporter", "tflite").export(
        _export_inputs(qmodel, features, bits=8), tmp_path
    )
    assert record["route"] == "bridge"
    assert record["tflm_vs_int_graph"]["logits_differ"] == 0
    assert record["model_agreement"]["top1_agree"] >= 0.95
