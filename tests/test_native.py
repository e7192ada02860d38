"""The native plugin: generated C kernels vs TFLM, packed weights, cross build, emulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kwscompress.errors import KwsError
from kwscompress_native import toolchain
from kwscompress_native.codegen import generate
from kwscompress_native.emulator import Emulator
from kwscompress_native.planner import Buffer, plan
from kwscompress_native.runtime import NativeRuntime, tflm_outputs
from kwscompress_native.tflite_model import narrow_weights, read_model

MICRO_SPEECH = Path(__file__).parent / "data" / "micro_speech_quantized.tflite"


def _random_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n, *shape[1:]), dtype=np.int8)


def _host_and_tflm(path: Path, bits: int, out_dir: Path, n: int = 48, seed: int = 0):
    gen = generate(read_model(path), bits)
    files = toolchain.write_sources(gen, out_dir)
    host = toolchain.HostModel(toolchain.build_host(files, out_dir), gen)
    x = _random_inputs(gen.input_shape, n, seed)
    ours = host.run(x).reshape(n, -1)
    ref = tflm_outputs(path.read_bytes(), x, gen.input_shape)
    return ours, ref, gen


def _convert(tf, model, shape: tuple[int, ...], seed: int) -> bytes:
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(32):
            yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def layer_models(tmp_path_factory) -> dict[str, Path]:
    """Two small int8 models with random weights covering every supported op and padding mode.

    ``dscnn_like``: CONV_2D (SAME, stride 2, ReLU), DEPTHWISE_CONV_2D 3x3 (ReLU6), pointwise
    CONV_2D, AVERAGE_POOL_2D, MAX_POOL_2D (SAME), MEAN, FULLY_CONNECTED, SOFTMAX.
    ``odd_shapes``: PAD (fused into) CONV_2D (VALID, stride 1x2, 3 input channels),
    DEPTHWISE_CONV_2D (multiplier 2, VALID, stride 2, ReLU), PAD, MAX_POOL_2D (VALID), RESHAPE,
    two FULLY_CONNECTED.
    ``temporal``: PAD + CONV_2D as wide as its input (13 x 1 output), DEPTHWISE_CONV_2D 5x1
    stride 2x1, pointwise CONV_2D, MEAN, FULLY_CONNECTED, SOFTMAX.
    """
    from kwscompress.tf_import import import_tensorflow

    tf = import_tensorflow()
    k = tf.keras
    k.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("layer_models")
    inp = k.Input((13, 10, 1), batch_size=1)
    x = k.layers.Conv2D(8, (4, 3), strides=2, padding="same", activation="relu")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = k.layers.Conv2D(6, 1, activation="relu")(x)
    x = k.layers.AveragePooling2D(2, padding="same")(x)
    x = k.layers.MaxPooling2D(2, padding="same")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Softmax()(k.layers.Dense(5)(x))
    models = {"dscnn_like": (k.Model(inp, x), (13, 10, 1))}
    inp = k.Input((9, 7, 3), batch_size=1)
    x = k.layers.ZeroPadding2D(((1, 2), (2, 1)))(inp)
    x = k.layers.Conv2D(5, (3, 2), strides=(1, 2), padding="valid")(x)
    x = k.layers.DepthwiseConv2D(
        (2, 3), strides=2, depth_multiplier=2, padding="valid", activation="relu"
    )(x)
    x = k.layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = k.layers.MaxPooling2D((2, 1), strides=(1, 1), padding="valid")(x)
    x = k.layers.Dense(7, activation="relu")(k.layers.Flatten()(x))
    x = k.layers.Softmax()(k.layers.Dense(3)(x))
    models["odd_shapes"] = (k.Model(inp, x), (9, 7, 3))
    # tc_ds_cnn's shape: a first layer as wide as the features (one output pixel per row), then
    # 1-D depthwise and pointwise layers over time.
    inp = k.Input((13, 10, 1), batch_size=1)
    x = k.layers.ZeroPadding2D(((1, 1), (0, 0)))(inp)
    x = k.layers.Conv2D(6, (3, 10), activation="relu")(x)
    x = k.layers.DepthwiseConv2D((5, 1), strides=(2, 1), padding="same", activation="relu")(x)
    x = k.layers.Conv2D(6, 1, activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Softmax()(k.layers.Dense(4)(x))
    models["temporal"] = (k.Model(inp, x), (13, 10, 1))
    paths = {}
    for seed, (name, (model, shape)) in enumerate(models.items()):
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(_convert(tf, model, shape, seed))
    return paths


def test_micro_speech_host_build_is_bit_exact_with_tflm(tmp_path: Path) -> None:
    ours, ref, gen = _host_and_tflm(MICRO_SPEECH, 8, tmp_path, n=96)
    assert [layer.op for layer in gen.layers] == [
        "RESHAPE", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX",
    ]  # fmt: skip
    assert gen.macs == 336_000
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize(
    ("name", "kernels"),
    [
        ("dscnn_like", {"simd-direct", "simd-depthwise", "simd-fc", "softmax"}),
        ("odd_shapes", {"simd-direct", "direct", "copy", "fused into the next layer", "alias"}),
        ("temporal", {"simd-direct", "simd-depthwise", "simd-fc"}),
    ],
)
def test_every_layer_kind_is_bit_exact_with_tflm(
    layer_models, name: str, kernels: set[str], tmp_path: Path
) -> None:
    ours, ref, gen = _host_and_tflm(layer_models[name], 8, tmp_path, n=64, seed=1)
    assert kernels <= {layer.kernel for layer in gen.layers}
    np.testing.assert_array_equal(ours, ref)
    if name == "temporal":  # the first layer's pixel blocks run down its single column
        assert "kws_l1_px4(img + oy * " in gen.source
    # The same code cross-compiled and emulated gives the same bytes as the host build.
    files = toolchain.write_sources(gen, tmp_path)
    emu = Emulator(toolchain.build_cross(files, tmp_path))
    x = _random_inputs(gen.input_shape, 1, seed=1)
    result = emu.run(x[0], gen.input_offset, gen.output_offset, ours.shape[1])
    np.testing.assert_array_equal(result.output, ours[0])


@pytest.mark.parametrize(
    "name", ["dscnn_like", "odd_shapes", "temporal", "micro_speech", "tc_ds_cnn"]
)
def test_generated_c_compiles_without_a_warning(layer_models, name: str, tmp_path: Path) -> None:
    """gcc -Wall -Wextra at -O2, whose loop analysis warns about loops that can never run (the
    generator once wrote remainder loops after blocks that divide evenly, and empty zero-fill
    loops; the default model had both)."""
    import subprocess

    import torch

    from kwscompress.models.ds_cnn import TcDsCnnSpec
    from kwscompress_tflite.keras_route import convert, to_keras

    if name == "tc_ds_cnn":
        torch.manual_seed(0)
        model = TcDsCnnSpec().build((49, 40), 4).eval()
        features = np.random.default_rng(0).uniform(0, 26, (16, 49, 40)).astype(np.float32)
        path = tmp_path / "tc_ds_cnn.tflite"
        path.write_bytes(convert(to_keras(model, name), features))
    else:
        path = MICRO_SPEECH if name == "micro_speech" else layer_models[name]
    files = toolchain.write_sources(generate(read_model(path), 8), tmp_path)
    flags = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", "-c"]
    compiler = toolchain.host_compiler()
    cmd = [compiler, *flags, str(files["model"]), "-o", str(tmp_path / "model.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_packed_4bit_weights_are_bit_exact_and_half_the_flash(tmp_path: Path) -> None:
    narrowed = tmp_path / "micro_speech_4bit.tflite"
    narrowed.write_bytes(narrow_weights(MICRO_SPEECH.read_bytes(), 4))
    ours, ref, gen4 = _host_and_tflm(narrowed, 4, tmp_path / "b4")
    np.testing.assert_array_equal(ours, ref)
    gen8 = generate(read_model(narrowed), 8)
    assert gen4.weight_bytes <= 0.6 * gen8.weight_bytes
    fc4 = next(layer for layer in gen4.layers if layer.op == "FULLY_CONNECTED")
    assert fc4.weight_bytes == 16_000 // 2
    # The nibble unpacking with the ACLE intrinsics gives the same bytes in the emulated M4.
    files = toolchain.write_sources(gen4, tmp_path / "m4")
    emu = Emulator(toolchain.build_cross(files, tmp_path / "m4"))
    x = _random_inputs(gen4.input_shape, 1, seed=0)
    result = emu.run(x[0], gen4.input_offset, gen4.output_offset, ours.shape[1])
    np.testing.assert_array_equal(result.output, ours[0])


def test_packed_4bit_weights_in_every_kernel(layer_models, tmp_path: Path) -> None:
    narrowed = tmp_path / "dscnn_like_4bit.tflite"
    narrowed.write_bytes(narrow_weights(layer_models["dscnn_like"].read_bytes(), 4))
    ours, ref, _ = _host_and_tflm(narrowed, 4, tmp_path / "b4", seed=2)
    np.testing.assert_array_equal(ours, ref)


def test_weights_wider_than_weight_bits_are_refused() -> None:
    with pytest.raises(KwsError, match=r"first_weights/read.*weight_bits=4"):
        generate(read_model(MICRO_SPEECH), 4)


def test_unsupported_op_is_named() -> None:
    model = read_model(MICRO_SPEECH)
    model.operators[-1].op = "TANH"
    with pytest.raises(KwsError, match="op TANH is not supported"):
        generate(model)


def test_planner_keeps_live_buffers_apart() -> None:
    buffers = [Buffer("a", 100, 0, 1), Buffer("b", 50, 1, 2), Buffer("c", 100, 2, 3)]
    arena = plan(buffers)
    a, b, c = buffers
    assert a.offset + 100 <= b.offset or b.offset + 50 <= a.offset
    assert c.offset == a.offset  # a is dead when c is born: same bytes reused
    assert arena == 104 + 56


@pytest.fixture(scope="module")
def micro_speech_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("ms_build")
    gen = generate(read_model(MICRO_SPEECH), 8)
    files = toolchain.write_sources(gen, out)
    host = toolchain.HostModel(toolchain.build_host(files, out), gen)
    elf = toolchain.build_cross(files, out)
    return gen, host, elf


def test_elf_sizes_and_weights_in_flash_rodata(micro_speech_build) -> None:
    gen, _, elf = micro_speech_build
    sizes = toolchain.elf_sizes(elf)
    assert min(sizes.text, sizes.rodata, sizes.bss) > 0
    assert sizes.bss >= gen.arena_bytes
    start, length = sizes.sections[".rodata"]
    assert start < toolchain.RAM_ORIGIN
    for symbol in gen.weight_symbols:
        address, size = sizes.symbols[symbol]
        assert start <= address and address + size <= start + length, symbol
    assert sizes.rodata >= gen.weight_bytes


def test_emulated_m4_matches_host_build_and_meets_instruction_target(micro_speech_build) -> None:
    gen, host, elf = micro_speech_build
    emu = Emulator(elf)
    x = _random_inputs(gen.input_shape, 2, seed=3)
    expected = host.run(x).reshape(2, -1)
    for i in range(2):
        result = emu.run(x[i], gen.input_offset, gen.output_offset, expected.shape[1])
        np.testing.assert_array_equal(result.output, expected[i])
        assert result.mnemonics.get("smlad", 0) >= gen.macs // 2 - 1000
        assert gen.macs / 2 < result.instructions <= 1.5 * gen.macs
        assert result.cycles > result.instructions
        assert 0 < result.stack_bytes < toolchain.STACK_BYTES


def test_native_runtime_returns_the_mcu_record(tmp_path: Path) -> None:
    x = _random_inputs((1, 1960), 6, seed=4)
    record = NativeRuntime().measure(MICRO_SPEECH, x, tmp_path, emulate_clips=1)
    assert record["bit_exact"] == 1.0
    assert record["emulated_clips"] == 1 and record["emulated_match_host"]
    assert record["flash_bytes"] == (
        record["text_bytes"] + record["rodata_bytes"] + record["data_bytes"]
    )
    assert record["ram_bytes"] >= record["activation_buffer_bytes"] > 0
    assert record["ms_at_clock"] == pytest.approx(1000 * record["cycles"] / 64e6)
    assert record["macs"] == 336_000
    assert "zig" in record["compiler"]["cross"]
    for rel in record["files"].values():
        assert (tmp_path / rel).is_file()


def test_native_runtime_rejects_inputs_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(KwsError, match="1960 values per input"):
        NativeRuntime().measure(MICRO_SPEECH, np.zeros((2, 10), np.int8), tmp_path)
