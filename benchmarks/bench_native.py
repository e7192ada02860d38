"""The native kernels in the emulated Cortex-M4: instructions, modelled cycles, sizes (JSON).

Models: TFLM's own micro_speech (``tests/data/micro_speech_quantized.tflite``), the same model
with its weights rounded to 4 bits (generated with packed 4-bit and with 8-bit storage), and a
tiny_conv converted here from Keras with random weights (newer converters emit CONV_2D instead
of DEPTHWISE_CONV_2D for its first layer). Inputs are random int8 tensors: the instruction count
barely depends on the values (only the requantization's saturation branches do).

``anchors`` are figures measured elsewhere on this machine kind (quoted from the issue), for
comparison only; nothing in ``anchors`` is measured by this script.

A DS-CNN small converted the same way shows the kernels on a second architecture (its 10.6 M
MACs take a few seconds per emulated inference).

Usage: ``python benchmarks/bench_native.py [--inputs 64] [--emulate 3] [--no-keras]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from kwscompress_native import emulator
from kwscompress_native.runtime import NativeRuntime
from kwscompress_native.tflite_model import narrow_weights

ROOT = Path(__file__).resolve().parent.parent
MICRO_SPEECH = ROOT / "tests" / "data" / "micro_speech_quantized.tflite"
CLOCK_HZ = 64_000_000

ANCHORS = {
    "note": "measured elsewhere (quoted from the issue), not by this script",
    "tflm_cmsis_nn_O2_micro_speech_instructions": 1_486_509,
    "tflm_cmsis_nn_O2_micro_speech_instructions_per_mac": 4.42,
    "tflm_cmsis_nn_Os_micro_speech_instructions": 2_382_886,
    "tflm_cmsis_nn_Os_micro_speech_instructions_per_mac": 7.09,
    "tflm_cmsis_nn_first_layer_share": 0.976,
    "tflm_cmsis_nn_first_layer_instructions_per_mac": 4.53,
    "tflm_cmsis_nn_fc_instructions_per_mac": 1.89,
    "naive_c_tiny_conv_instructions": 3_720_000,
    "naive_c_tiny_conv_instructions_per_mac": 11,
    "reference_report_board_ms": 86,
    "reference_report_board_cycles_per_mac": 16.4,
}
TARGETS = {
    "tiny_conv_int8_instructions_per_mac_max": 1.5,
    "four_bit_weight_flash_share_max": 0.6,
    "host_seconds_per_emulated_inference_max": 2.0,
}


def _keras_tiny_conv(k):
    inp = k.Input((49, 40, 1), batch_size=1)
    x = k.layers.Conv2D(8, (10, 8), strides=2, padding="same", activation="relu")(inp)
    return k.Model(inp, k.layers.Softmax()(k.layers.Dense(4)(k.layers.Flatten()(x))))


def _keras_ds_cnn(k):
    """DS-CNN small as kwscompress.models.ds_cnn builds it (batch norm folded by the converter)."""
    inp = k.Input((49, 40, 1), batch_size=1)
    x = k.layers.Conv2D(64, (10, 4), strides=2, padding="same", use_bias=False)(inp)
    x = k.layers.ReLU()(k.layers.BatchNormalization()(x))
    for _ in range(4):
        x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = k.layers.ReLU()(k.layers.BatchNormalization()(x))
        x = k.layers.Conv2D(64, 1, use_bias=False)(x)
        x = k.layers.ReLU()(k.layers.BatchNormalization()(x))
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inp, k.layers.Softmax()(k.layers.Dense(4)(x)))


def _convert(build, out: Path, name: str) -> Path:
    """Random weights, random features in the micro frontend's range, full-int8 conversion."""
    from kwscompress.tf_import import import_tensorflow

    tf = import_tensorflow()
    k = tf.keras
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(64):
            yield [rng.uniform(0, 26, (1, 49, 40, 1)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(build(k))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # The converter prints what it saves to stdout; keep stdout for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        model = converter.convert()
    path = out / f"{name}.tflite"
    path.write_bytes(model)
    return path


def _layer_rates(record: dict) -> dict[str, float]:
    """Instructions per MAC of each MAC layer, from the per-function counts."""
    rates = {}
    by_fn = record["instructions_by_function"] or {}
    for index, layer in enumerate(record["layers"]):
        if not layer["macs"]:
            continue
        count = sum(
            n
            for fn, n in by_fn.items()
            if fn == f"kws_layer{index}" or fn.startswith(f"kws_l{index}_")
        )
        rates[f"{index}:{layer['op']}"] = round(count / layer["macs"], 3)
    return rates


def _summary(record: dict) -> dict:
    reads = record["flash_data_reads"] or 0
    cycles = record["cycles"]
    base = cycles - reads * emulator.FLASH_WAIT_STATES
    return {
        "bit_exact_vs_tflm": record["bit_exact"],
        "compared_inputs": record["compared_inputs"],
        "emulated_clips": record["emulated_clips"],
        "emulated_match_host": record["emulated_match_host"],
        "macs": record["macs"],
        "instructions": record["instructions"],
        "instructions_per_mac": round(record["instructions_per_mac"], 3),
        "instructions_per_mac_by_layer": _layer_rates(record),
        "cycles_model": cycles,
        "cycles_per_mac_model": round(record["cycles_per_mac"], 3),
        "ms_at_64mhz_model": round(record["ms_at_clock"], 3),
        "ms_at_64mhz_by_flash_wait_states": {
            w: round(1000 * (base + reads * w) / CLOCK_HZ, 3) for w in (0, 1, 2, 3)
        },
        "text_bytes": record["text_bytes"],
        "rodata_bytes": record["rodata_bytes"],
        "data_bytes": record["data_bytes"],
        "bss_bytes": record["bss_bytes"],
        "flash_bytes": record["flash_bytes"],
        "ram_bytes": record["ram_bytes"],
        "stack_bytes": record["stack_bytes"],
        "activation_buffer_bytes": record["activation_buffer_bytes"],
        "weight_bits": record["weight_bits"],
        "weight_flash_bytes": record["weight_bytes"],
        "host_seconds_per_emulated_inference": round(
            record["host_seconds_per_emulated_inference"], 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=64, help="random inputs checked vs TFLM")
    parser.add_argument("--emulate", type=int, default=3, help="inputs run in the emulator")
    parser.add_argument(
        "--no-keras", action="store_true", help="skip the Keras tiny_conv and DS-CNN"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(args.inputs, 1, 1960), dtype=np.int8)
    runtime = NativeRuntime()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        four_bit = out / "micro_speech_4bit.tflite"
        four_bit.write_bytes(narrow_weights(MICRO_SPEECH.read_bytes(), 4))
        cases = [
            ("micro_speech_int8", MICRO_SPEECH, 8),
            ("micro_speech_weights4_packed4", four_bit, 4),
            ("micro_speech_weights4_stored8", four_bit, 8),
        ]
        if not args.no_keras:
            cases.append(("tiny_conv_keras_int8", _convert(_keras_tiny_conv, out, "tiny_conv"), 8))
            cases.append(("ds_cnn_keras_int8", _convert(_keras_ds_cnn, out, "ds_cnn"), 8))
        for name, path, bits in cases:
            inputs = x.reshape(args.inputs, 49, 40, 1) if "keras" in name else x
            record = runtime.measure(
                path, inputs, out / name, weight_bits=bits, emulate_clips=args.emulate
            )
            results[name] = _summary(record)
            compiler = record["compiler"]
            cycle_model = record["cycle_model"]
    four = results["micro_speech_weights4_packed4"]["weight_flash_bytes"]
    eight = results["micro_speech_weights4_stored8"]["weight_flash_bytes"]
    ms8 = results["micro_speech_int8"]
    print(
        json.dumps(
            {
                "benchmark": "native kernels, emulated Cortex-M4 (unicorn), zig cross build",
                "machine": platform.machine(),
                "python": platform.python_version(),
                "compiler": compiler,
                "cycle_model": cycle_model,
                "measured": results,
                "four_bit_vs_eight_bit_weight_flash": round(four / eight, 3),
                "speedup_vs_anchor_tflm_cmsis_nn_O2_instructions": round(
                    ANCHORS["tflm_cmsis_nn_O2_micro_speech_instructions"] / ms8["instructions"], 2
                ),
                "targets": TARGETS,
                "targets_met": {
                    "instructions_per_mac": ms8["instructions_per_mac"]
                    <= TARGETS["tiny_conv_int8_instructions_per_mac_max"],
                    "bit_exact": ms8["bit_exact_vs_tflm"] == 1.0,
                    "four_bit_flash": four / eight <= TARGETS["four_bit_weight_flash_share_max"],
                    "emulation_seconds": ms8["host_seconds_per_emulated_inference"]
                    <= TARGETS["host_seconds_per_emulated_inference_max"],
                },
                "anchors": ANCHORS,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
