"""The Brevitas plugin: ``ptq`` and ``qat`` quantizers, ``int_graph()``, and their accuracy.

The data are synthetic: each of 4 classes is a pattern of three Gaussian blobs on a shared
background (values in [0, 26], like the ``micro`` features), shifted in time, scaled, and
buried in noise. A tiny_conv learns it in a few epochs; 2-bit quantization visibly hurts it.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from kwscompress.compress.context import StepContext
from kwscompress.config import TrainConfig
from kwscompress.errors import ConfigError, KwsError
from kwscompress.intgraph_reference import quantize_input, run_int_graph, trace_int_graph
from kwscompress.models import DsCnn, TinyConv
from kwscompress.protocols import Quantizer, ReportSection
from kwscompress.train import LabeledFeatures, evaluate, set_seed, train_model
from kwscompress_brevitas import PtqQuantizer, QatQuantizer
from kwscompress_brevitas.device_rounding import device_output

LABELS = ["_silence_", "_unknown_", "yes", "no"]
SHAPE = (49, 40)
FAST = {"calibration_batches": 4, "calibration_batch_size": 64}
"""Calibration on 256 training clips keeps each quantization well under a second."""

QAT_MARGIN = 0.02
"""QAT at 4 bits may trail PTQ at 4 bits by at most 2 points of test accuracy (8 of 400 clips).

QAT starts from the same calibrated model as PTQ and keeps its best validation epoch, so it is
never trained to be worse; but the validation-best epoch is not the test-best one, and 3 epochs
at a low learning rate move the test score by a clip or two either way. Broken QAT (no gradient
through the quantizers, lost calibration, a wrong learning rate) costs tens of points, far
outside the margin."""


def _prototypes(shape: tuple[int, int], strength: float, seed: int = 123) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames, bins = shape
    time_axis, bin_axis = np.mgrid[0:frames, 0:bins]
    background = rng.uniform(0, 1, shape)
    patterns = []
    for _ in LABELS:
        blobs = np.zeros(shape)
        for _ in range(3):
            t0, f0 = rng.integers(2, frames - 2), rng.integers(2, bins - 2)
            blobs += np.exp(
                -((time_axis - t0) ** 2 / (0.6 * frames) + (bin_axis - f0) ** 2 / (0.2 * bins))
            )
        patterns.append(8 + strength * blobs + 4 * background)
    return np.array(patterns)


def _clips(count: int, seed: int, prototypes: np.ndarray) -> LabeledFeatures:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), count)
    reach = prototypes.shape[1] // 12  # time shifts of up to about 80 ms
    shifts = rng.integers(-reach, reach + 1, count)
    gains = rng.uniform(0.5, 1.0, count)
    clean = np.stack(
        [np.roll(prototypes[c], s, axis=0) for c, s in zip(labels, shifts, strict=True)]
    )
    noisy = clean * gains[:, None, None] + rng.normal(0, 4, clean.shape)
    return LabeledFeatures(np.clip(noisy, 0, 26).astype(np.float32), labels)


def _splits(shape: tuple[int, int], train: int, strength: float) -> dict[str, LabeledFeatures]:
    """Clips whose class patterns stand ``strength`` above the background (out of 26)."""
    prototypes = _prototypes(shape, strength)
    return {
        "training": _clips(train, 1, prototypes),
        "validation": _clips(200, 2, prototypes),
        "testing": _clips(400, 3, prototypes),
    }


def _train(model: torch.nn.Module, splits, epochs: int, lr: float, path: Path) -> torch.nn.Module:
    # The toy prototypes are not spectra: warping their "frequency" axis would only blur them.
    config = TrainConfig(
        epochs=epochs, batch_size=32, learning_rate=lr, lr_step_epochs=100, freq_warp=0.0
    )
    train_model(model, splits["training"], splits["validation"], config, path)
    return model.eval()


def _context(splits) -> StepContext:
    return StepContext(
        train=splits["training"],
        validation=splits["validation"],
        labels=LABELS,
        train_config=TrainConfig(batch_size=32, freq_warp=0.0),
        finetune_learning_rate=1e-4,
        seed=0,
    )


def _accuracy(model: torch.nn.Module, data: LabeledFeatures) -> float:
    return evaluate(model, data, LABELS)["accuracy"]


def _agreement(model: torch.nn.Module, data: LabeledFeatures) -> float:
    """Share of clips whose top-1 class the integer graph and the Brevitas model agree on."""
    graph = model.int_graph()
    ints = run_int_graph(graph, quantize_input(graph, data.features))
    with torch.no_grad():
        fake = model(torch.from_numpy(data.features)).argmax(dim=1).numpy()
    return float((ints.argmax(axis=1) == fake).mean())


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine a second one only waits (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> dict[str, LabeledFeatures]:
    # Weak patterns (6): the float model reaches about 97 %, and 2-bit weights lose 15 points.
    return _splits(SHAPE, 600, strength=6)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> TinyConv:
    """A tiny_conv trained for a few epochs (about 100 % on this data)."""
    set_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "best.pt"
    return _train(TinyConv(SHAPE, len(LABELS)), data, 6, 0.001, path)


@pytest.fixture(scope="module")
def quantized(trained, data):
    """Quantize ``trained`` once per (method, settings) and share the results between tests."""
    cache = {}
    context = _context(data)
    components = {"ptq": PtqQuantizer(), "qat": QatQuantizer()}

    def get(method: str, **settings):
        key = (method, tuple(sorted(settings.items())))
        if key not in cache:
            cache[key] = components[method].quantize(trained, context, **FAST, **settings)
        return cache[key]

    return get


# -- accuracy ---------------------------------------------------------------------------------


def test_ptq_8bit_stays_within_one_point_of_float(trained, data, quantized) -> None:
    float_accuracy = _accuracy(trained, data["testing"])
    assert float_accuracy >= 0.9  # the data are learnable: the comparison means something
    assert _accuracy(quantized("ptq", bits=8).model, data["testing"]) >= float_accuracy - 0.01


def test_2bit_loses_accuracy_that_8bit_keeps(data, quantized) -> None:
    eight = _accuracy(quantized("ptq", bits=8).model, data["testing"])
    two = _accuracy(quantized("ptq", bits=2).model, data["testing"])
    assert two <= eight - 0.05


def test_qat_4bit_is_not_worse_than_ptq_4bit_beyond_the_margin(data, quantized) -> None:
    ptq = _accuracy(quantized("ptq", bits=4).model, data["testing"])
    result = quantized("qat", bits=4)
    assert _accuracy(result.model, data["testing"]) >= ptq - QAT_MARGIN
    assert result.info["finetune"]["epochs"] == 3
    assert result.info["learning_rate"] == 1e-4  # the context's fine-tuning rate


# -- what the quantized model is --------------------------------------------------------------


@pytest.mark.parametrize(("bits", "per_channel"), [(8, True), (4, False), (3, True)])
def test_fake_quant_weights_are_integer_weights_times_scale(quantized, bits, per_channel) -> None:
    model = quantized("ptq", bits=bits, per_channel=per_channel).model
    for layer in [*model.convs, model.fc]:
        weight = layer.quant_weight()
        codes = weight.int().to(torch.float32)
        assert torch.equal(weight.value, codes * weight.scale)
        assert codes.abs().max() <= 2 ** (bits - 1) - 1  # narrow range: symmetric, zero point 0
        assert torch.equal(weight.zero_point, torch.zeros_like(weight.zero_point))
    conv_scales = model.convs[0].quant_weight().scale.numel()
    assert conv_scales == (model.convs[0].out_channels if per_channel else 1)
    assert model.fc.quant_weight().scale.numel() == 1  # per tensor: TFLM's FULLY_CONNECTED


def test_tiny_conv_int_graph_agrees_with_brevitas(data, quantized) -> None:
    model = quantized("ptq", bits=8).model
    graph = model.int_graph()
    assert [layer.op for layer in graph.layers] == ["conv2d", "fully_connected", "softmax"]
    assert graph.input_shape == (1, 49, 40, 1) and graph.input.zero_point == -128
    conv, fc, softmax = graph.layers
    assert conv.weights.shape == (8, 10, 8, 1) and conv.weights.dtype == np.int8
    assert conv.padding == (5, 5, 3, 3) and conv.stride == (2, 2) and conv.fused_relu
    assert conv.output_shape == (1, 25, 20, 8) and conv.output.zero_point == -128
    assert conv.bias.dtype == np.int32 and fc.weights.shape == (4, 4000)
    assert (softmax.output.scale, softmax.output.zero_point) == (1 / 256, -128)
    assert graph.labels == LABELS
    assert _agreement(model, data["testing"]) >= 0.99


def _logit_codes(model: torch.nn.Module, graph, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(features)).numpy()
    return np.round(logits / graph.layers[-2].output.scale).astype(int)


def test_int_graph_logits_match_brevitas_codes_and_fc_columns_are_hwc(data, quantized) -> None:
    """The graph's int8 logits are the model's logit codes."""
    model = quantized("ptq", bits=8).model
    graph = model.int_graph()
    features = data["testing"].features[:100]
    logits = trace_int_graph(graph, quantize_input(graph, features))[1].astype(int)
    assert (logits == _logit_codes(model, graph, features)).all()
    # Column (h, w, c) of the graph's fc weights is PyTorch's column (c, h, w).
    torch_codes = model.fc.quant_weight().int().numpy()
    assert graph.layers[1].weights[2, (3 * 20 + 7) * 8 + 5] == torch_codes[2, 5 * 500 + 3 * 20 + 7]


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("ptq", {"bits": 8}),
        ("ptq", {"bits": 6}),
        ("ptq", {"bits": 4}),
        ("ptq", {"bits": 2}),
        ("qat", {"bits": 4}),
        ("ptq", {"weight_bits": 4, "act_bits": 8, "per_channel": False}),
        ("ptq", {"weight_bits": 8, "act_bits": 3}),
    ],
)
def test_eval_forward_computes_tflms_logits_bit_for_bit(data, quantized, method, settings) -> None:
    """In eval mode the model is its integer graph, as TFLM runs it, at every bit width.

    Brevitas alone rounds each output once where TFLM rounds twice (a fixed-point multiply,
    then a rounding shift); at 4 bits that moves logits and classes (the check that the device
    rounding is what makes them equal).
    """
    model = quantized(method, **settings).model.eval()
    graph = model.int_graph()
    features = data["testing"].features
    logits = trace_int_graph(graph, quantize_input(graph, features))[-2].astype(int)
    assert (_logit_codes(model, graph, features) == logits).all()
    if settings == {"bits": 4}:
        model.device_rounding = False
        try:
            single = _logit_codes(model, graph, features)
        finally:
            model.device_rounding = True
        assert (single != logits).any()


def test_eval_forward_with_gradients_keeps_tflms_values_and_brevitas_gradients(
    data, quantized
) -> None:
    model = copy.deepcopy(quantized("ptq", bits=4).model).eval()
    features = torch.from_numpy(data["testing"].features[:64])
    with torch.no_grad():
        plain = model(features)
    traced = model(features)
    assert torch.equal(traced.detach(), plain)
    traced.square().sum().backward()
    gradients = [p.grad for p in model.convs[0].parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert any(g.abs().sum() > 0 for g in gradients)


def test_device_codes_equal_tflites_integer_arithmetic_at_and_near_ties() -> None:
    from kwscompress.intgraph_reference import multiply_by_quantized_multiplier, quantize_multiplier
    from kwscompress_brevitas.device_rounding import device_codes

    rng = np.random.default_rng(7)
    multipliers = [quantize_multiplier(m) for m in (0.0031, 0.017, 0.11, 0.5, 0.77, 1.9)]
    channels = len(multipliers)
    accumulators = rng.integers(-200_000, 200_000, (500, channels)).astype(np.int64)
    # Add accumulators whose real value lies on or within a hair of a half-way point.
    for c, (q, shift) in enumerate(multipliers):
        real = q * 2.0 ** (shift - 31)
        halves = (np.arange(-40, 40) + 0.5) / real
        near = np.concatenate([np.floor(halves), np.ceil(halves)]).astype(np.int64)
        accumulators[: len(near), c] = near
    expected = multiply_by_quantized_multiplier(
        accumulators, np.array([q for q, _ in multipliers]), np.array([s for _, s in multipliers])
    )
    got = device_codes(torch.from_numpy(accumulators.astype(np.float64)), multipliers)
    assert (got.numpy().astype(np.int64) == expected).all()


def _channel_pruned(model: TinyConv, keep: int) -> TinyConv:
    """A physically smaller TinyConv: the ``keep`` largest-L1 channels and their fc columns."""
    norms = model.conv.weight.detach().abs().sum(dim=(1, 2, 3))
    kept = torch.sort(torch.argsort(norms, descending=True)[:keep]).values
    small = TinyConv(SHAPE, len(LABELS), channels=keep)
    with torch.no_grad():
        small.conv.weight.copy_(model.conv.weight[kept])
        small.conv.bias.copy_(model.conv.bias[kept])
        columns = model.fc.weight.reshape(len(LABELS), 8, 500)[:, kept]
        small.fc.weight.copy_(columns.reshape(len(LABELS), -1))
        small.fc.bias.copy_(model.fc.bias)
    return small.eval()


def test_channel_pruned_tiny_conv_quantizes_and_agrees(trained, data) -> None:
    small = _channel_pruned(trained, 5)
    assert small.fc.in_features == 2500
    result = PtqQuantizer().quantize(small, _context(data), bits=8, **FAST)
    graph = result.model.int_graph()
    assert graph.layers[0].weights.shape == (5, 10, 8, 1)
    assert graph.layers[1].weights.shape == (4, 2500)
    assert _agreement(result.model, data["testing"]) >= 0.99


def test_magnitude_pruned_masks_carry_into_the_integer_weights(trained, data) -> None:
    masked = copy.deepcopy(trained)
    prune.l1_unstructured(masked.conv, "weight", amount=0.5)
    prune.l1_unstructured(masked.fc, "weight", amount=0.7)
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    model = PtqQuantizer().quantize(masked, _context(data), bits=8, **FAST).model
    graph = model.int_graph()
    conv_mask = masked.conv.weight_mask.permute(0, 2, 3, 1).numpy()
    assert (graph.layers[0].weights[conv_mask == 0] == 0).all()
    assert (model.fc.quant_weight().int().numpy()[masked.fc.weight_mask.numpy() == 0] == 0).all()
    assert hasattr(masked.conv, "weight_orig")  # the input keeps its reparametrization
    for key, value in masked.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(("weight_bits", "act_bits"), [(2, 2), (3, 8), (4, 4), (6, 5), (8, 3)])
def test_sub_8bit_integers_stay_inside_their_range(data, quantized, weight_bits, act_bits) -> None:
    result = quantized("ptq", weight_bits=weight_bits, act_bits=act_bits)
    assert (result.info["weight_bits"], result.info["act_bits"]) == (weight_bits, act_bits)
    graph = result.model.int_graph()
    limit = 2 ** (weight_bits - 1) - 1
    for layer in graph.layers[:2]:
        assert layer.weight_bits == weight_bits
        assert layer.weights.dtype == np.int8 and np.abs(layer.weights).max() <= limit
    # An unsigned act_bits code q is int8 q + 128 - 2**act_bits: the ReLU output of the graph
    # stays in the top 2**act_bits codes, and int8 saturation is the activation's own clamp.
    conv = graph.layers[0]
    assert conv.output.zero_point == 128 - 2**act_bits
    outputs = trace_int_graph(graph, quantize_input(graph, data["testing"].features[:64]))
    assert outputs[0].min() >= conv.output.zero_point
    assert graph.layers[1].output.zero_point == 0  # logits stay signed 8-bit
    assert _agreement(result.model, LabeledFeatures(data["testing"].features[:200], None)) >= 0.95


def test_negative_features_get_a_signed_input(trained, data) -> None:
    """Features that can be negative (MFCC-like) are quantized signed, zero point 0."""
    shifted = {k: LabeledFeatures(v.features - 13.0, v.labels) for k, v in data.items()}
    result = PtqQuantizer().quantize(trained, _context(shifted), bits=8, **FAST)
    graph = result.model.int_graph()
    assert result.info["signed_input"] and graph.input.zero_point == 0
    codes = quantize_input(graph, np.array([[[-13.0, 0.0, 13.0]]]))
    assert codes[0, 0, 0] < 0 and codes[0, 0, 1] == 0 and codes[0, 0, 2] > 0
    assert _agreement(result.model, shifted["testing"]) >= 0.99


@pytest.fixture(scope="module")
def ds_cnn(tmp_path_factory):
    """A DS-CNN trained on 25 x 20 features (a quarter of the MACs of 49 x 40, same layers)."""
    splits = _splits((25, 20), 400, strength=10)
    set_seed(0)
    path = tmp_path_factory.mktemp("ds") / "best.pt"
    return _train(DsCnn((25, 20), len(LABELS)), splits, 4, 0.01, path), splits


def test_ds_cnn_folds_batch_norm_and_its_int_graph_agrees(ds_cnn) -> None:
    model, splits = ds_cnn
    test = LabeledFeatures(splits["testing"].features[:200], splits["testing"].labels[:200])
    result = PtqQuantizer().quantize(model, _context(splits), bits=8, **FAST)
    assert result.info["folded_batch_norms"] == 9
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in result.model.modules())
    float_accuracy = _accuracy(model, test)
    assert float_accuracy >= 0.8
    # With the batch norms folded wrongly the quantized model would be far off the float one.
    assert _accuracy(result.model, test) >= float_accuracy - 0.03
    graph = result.model.int_graph()
    ops = [layer.op for layer in graph.layers]
    assert ops == ["conv2d"] + ["depthwise_conv2d", "conv2d"] * 4 + [
        "average_pool2d",
        "fully_connected",
        "softmax",
    ]
    assert graph.layers[1].weights.shape == (1, 3, 3, 64)
    pool = graph.layers[9]
    assert pool.pool == (13, 10) and pool.output == graph.layers[8].output
    assert _agreement(result.model, test) >= 0.99
    # The pooled codes themselves: the TFLite-style average over the device-rounded codes.
    qmodel, features = result.model, torch.from_numpy(test.features[:64])
    with torch.no_grad():
        x = qmodel.input_quant(features.reshape(-1, 1, 25, 20))
        for conv, relu in zip(qmodel.convs, qmodel.relus, strict=True):
            x = device_output(conv, x, relu)
        pooled = qmodel.pool(x).int().numpy().astype(int).reshape(64, -1) + pool.output.zero_point
    ours = trace_int_graph(graph, quantize_input(graph, test.features[:64]))[9].reshape(64, -1)
    assert (ours == pooled).all()


# -- the component contract -------------------------------------------------------------------


def test_settings_fill_defaults_and_resolve_the_bits_shorthand() -> None:
    ptq, qat = PtqQuantizer(), QatQuantizer()
    assert ptq.settings({}) == {
        "weight_bits": 8,
        "act_bits": 8,
        "per_channel": True,
        "calibration_batches": 10,
        "calibration_batch_size": 100,
        "bias_correction": False,
    }
    assert ptq.settings({"bits": 4})["weight_bits"] == 4
    assert ptq.settings({"bits": 4, "act_bits": 8}) | {} == ptq.settings(
        {"weight_bits": 4, "act_bits": 8}
    )
    defaults = qat.settings({"bits": 6})
    assert (defaults["epochs"], defaults["learning_rate"], defaults["act_bits"]) == (3, None, 6)
    # One value for both widths, so one list sweeps them: "w4a8" is 4-bit weights, 8-bit ReLUs.
    assert ptq.settings({"bits": "w4a8"}) == ptq.settings({"weight_bits": 4, "act_bits": 8})
    assert qat.settings({"bits": "w4a8", "weight_bits": 2})["weight_bits"] == 2


def test_a_bits_pair_in_a_sweep_list_names_its_variant(pm) -> None:
    from kwscompress.compress.recipes import expand_recipes
    from kwscompress.config import RecipeConfig

    recipe = RecipeConfig("ptq", [{"kind": "quantize", "method": "ptq", "bits": [4, "w4a8"]}])
    variants = expand_recipes([recipe], pm)
    assert [v.id for v in variants] == ["ptq-4b", "ptq-w4a8"]
    assert variants[1].steps[0].settings["act_bits"] == 8 and variants[1].weight_bits == 4


@pytest.mark.parametrize(
    ("method", "values", "words"),
    [
        ("ptq", {"bitz": 4}, ["'bitz'", "weight_bits", "bias_correction"]),
        ("ptq", {"bits": 1}, ["bits = 1", "from 2 to 8"]),
        ("ptq", {"weight_bits": 9}, ["weight_bits = 9", "from 2 to 8"]),
        ("qat", {"act_bits": 4.5}, ["act_bits = 4.5", "an integer"]),
        ("ptq", {"per_channel": "no"}, ["per_channel = 'no'", "true or false"]),
        ("ptq", {"bits": True}, ["bits = True"]),
        ("ptq", {"bits": "4bit"}, ["bits = '4bit'", "from 2 to 8", "'w4a8'"]),
        ("qat", {"bits": "w9a8"}, ["weight_bits = 9", "from 2 to 8"]),
        ("qat", {"epochs": 0}, ["epochs = 0", "from 1"]),
        ("qat", {"learning_rate": -1}, ["learning_rate = -1", "a number"]),
        ("qat", {"bias_correction": True}, ["'bias_correction'", "epochs"]),
        ("ptq", {"calibration_batches": 0}, ["calibration_batches = 0"]),
    ],
)
def test_settings_errors_name_the_key_value_and_range(method, values, words) -> None:
    component = PtqQuantizer() if method == "ptq" else QatQuantizer()
    with pytest.raises(ConfigError) as error:
        component.settings(values)
    for word in [f"{method!r}", *words]:
        assert word in str(error.value)


def test_unsupported_model_names_its_class_and_the_supported_ones(data) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1960, 4))
    with pytest.raises(KwsError, match=r"Sequential.*tiny_conv \(TinyConv\), ds_cnn \(DsCnn\)"):
        PtqQuantizer().quantize(model, _context(data), **FAST)


def test_input_model_is_unchanged_and_info_is_complete(trained, data) -> None:
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    ptq = PtqQuantizer().quantize(trained, _context(data), bits=6, bias_correction=True, **FAST)
    qat = QatQuantizer().quantize(
        trained, _context(data), bits=6, epochs=1, learning_rate=3e-4, **FAST
    )
    for key, value in trained.state_dict().items():
        assert torch.equal(value, before[key]), key
    common = {"weight_bits": 6, "act_bits": 6, "per_channel": True, "input_bits": 8}
    assert (
        ptq.info.items() >= (common | {"bias_correction": True, "calibration_batches": 4}).items()
    )
    assert ptq.info["calibration_clips"] == 256
    assert qat.info.items() >= (common | {"epochs": 1, "learning_rate": 3e-4}).items()
    assert qat.info["finetune"]["best_validation_accuracy"] > 0.5
    # Bias correction moved biases: the corrected model is not the plain calibrated one.
    plain = PtqQuantizer().quantize(trained, _context(data), bits=6, **FAST).model
    assert not torch.equal(plain.fc.bias, ptq.model.fc.bias)


def test_quantized_model_pickles_and_runs_under_inference_mode(data, quantized) -> None:
    model = quantized("qat", bits=4).model
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    features = torch.from_numpy(data["testing"].features[:32])
    with torch.inference_mode():
        assert torch.equal(loaded(features), model(features))
    copied = copy.deepcopy(model)
    for a, b in zip(copied.int_graph().layers, loaded.int_graph().layers, strict=True):
        assert a.output == b.output
        assert a.weights is None or np.array_equal(a.weights, b.weights)


def test_registered_through_the_entry_point(pm) -> None:
    for name in ("ptq", "qat"):
        component = pm.component("quantizer", name)
        assert isinstance(component, Quantizer) and component.name == name
    section = pm.component("report_section", "quantization")
    assert isinstance(section, ReportSection) and section.order == 82


# -- the report section -----------------------------------------------------------------------


def _row(variant: str, steps: list[dict], test: float, status: str = "ok") -> dict:
    return {
        "id": variant,
        "recipe": variant.split("-")[0],
        "status": status,
        "error": None if status == "ok" else {"message": "ValueError: boom"},
        "steps": steps,
        "accuracy": {"training": test + 0.02, "validation": test + 0.01, "testing": test},
        "weight_bytes": 4000,
    }


def _quantize(method: str, bits: int, **settings) -> list[dict]:
    values = {"weight_bits": bits, "act_bits": bits, "per_channel": True} | settings
    return [{"kind": "quantize", "method": method, "settings": values, "info": dict(values)}]


def test_section_draws_figures_5_to_7_and_the_table(tmp_path) -> None:
    from kwscompress.run import Run
    from kwscompress_brevitas.section import QuantizationSection

    prune = {"kind": "prune", "method": "channel", "settings": {"amount": 0.5}}
    rows = [_row("float", [], 0.9)]
    rows += [_row(f"ptq-{b}b", _quantize("ptq", b), 0.5 + b / 20) for b in (2, 4, 6, 8)]
    rows += [_row(f"qat-{b}b", _quantize("qat", b), 0.55 + b / 20) for b in (2, 4, 8)]
    rows += [
        _row("ptq-w4a8", _quantize("ptq", 4, act_bits=8), 0.8),
        _row("qat-6b", _quantize("qat", 6), 0.0, status="failed"),
        _row("channel-0.5", [prune], 0.7),
        _row("channel-qat-8b", [prune, *_quantize("qat", 8)], 0.75),
    ]
    run = Run(tmp_path)
    run.results["variants"] = rows
    content = QuantizationSection().render(run)
    assert content is not None
    for name in ("quantization-qat-splits", "quantization-ptq-splits", "quantization-bits"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in content.html
    markdown = content.markdown
    assert "Figure 5: accuracy of the 4-bit, 8-bit QAT variants" in markdown
    assert "Figure 6: accuracy of the 4-bit, w4a8, 8-bit PTQ variants" in markdown
    assert (
        "| ptq-4b | ptq | 4 | 4 | yes | 72.0 % | 71.0 % | 70.0 % | 4,000 B (3.9 KiB) |" in markdown
    )
    assert "| ptq-w4a8 | ptq | 4 | 8 | yes |" in markdown
    assert "| float | float | 32 | 32 |" in markdown
    assert "| qat-6b | qat | 6 | 6 | yes | failed (ValueError: boom) |" in markdown
    assert "channel-0.5" not in markdown and "channel-qat-8b" not in markdown


def test_section_is_absent_without_ptq_or_qat_rows(tmp_path) -> None:
    from kwscompress.run import Run
    from kwscompress_brevitas.section import QuantizationSection

    run = Run(tmp_path)
    assert QuantizationSection().render(run) is None
    prune = {"kind": "prune", "method": "magnitude", "settings": {"amount": 0.5}}
    run.results["variants"] = [_row("float", [], 0.9), _row("magnitude-0.5", [prune], 0.8)]
    assert QuantizationSection().render(run) is None
