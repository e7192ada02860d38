"""The ``arduino`` backend: a complete sketch for the Nano 33 BLE Sense around a ``.tflite``.

The sketch is rendered from the Jinja2 templates of ``kwscompress.firmware_templates`` (the
``firmware_templates/`` folder). Everything model-specific is derived here, from the model file
itself and from the settings training used:

* the model bytes as a 16-byte-aligned C array;
* the op resolver: exactly the builtin ops the model's operators use, read from the flatbuffer;
* the input mapping: a table from the frontend's uint16 output to the model's int8 input,
  computed with the model's own input scale and zero point and the training scale of the
  features, by :func:`kwscompress_features.micro.quantize_for_device` (the host's mapping, so
  the board and the host quantize identically);
* the frontend: window, stride, channels and sample rate from the training features, the other
  constants from the same settings (TFLM micro_speech's values);
* labels (escaped, any text is valid C++), recognizer settings, and the tensor arena.

Rendering is deterministic: the same inputs give the same bytes (no dates, no absolute paths).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

import kwscompress
from kwscompress.errors import KwsError
from kwscompress.protocols import FirmwareInputs
from kwscompress.recognizer import RecognizerSettings
from kwscompress.run import atomic_open
from kwscompress_arduino import cpp
from kwscompress_arduino.model_info import ModelInfo, read_model

ARENA_MARGIN_FRACTION = 0.25
"""Added to a measured arena. The host measures with TFLM's reference kernels and 64-bit
pointers; the board runs CMSIS-NN kernels, which request scratch buffers the reference kernels
do not, so the measurement alone can be short."""
ARENA_MARGIN_MIN_BYTES = 2048
"""The margin is at least this much."""
ARENA_ROUND_BYTES = 1024
"""The arena is rounded up to a multiple of this."""
DEFAULT_ARENA_BYTES = 64 * 1024
"""The arena when none was measured: generous for KWS models of this size (micro_speech's
tiny_conv needs 10 KiB), and the board has 256 KiB. The sketch prints the bytes it really used
(``ARENA used_bytes=``), so the size can be trimmed after a first run."""

LIBRARIES: dict[str, dict[str, str]] = {
    "chirale": {
        "name": "Chirale_TensorFLowLite",
        "header": "Chirale_TensorFlowLite.h",
        "text": (
            "The sketch uses **Chirale_TensorFLowLite** (the Library Manager spells it with a "
            "capital L in `FLow`; the sketch was written for version 2.0.0). It is TFLM "
            "regenerated for Arduino boards of the `mbed_nano` architecture (the Nano 33 BLE "
            "among them), installed from the Library Manager, and it carries TFLM's micro "
            "frontend (`tensorflow/lite/experimental/microfrontend/lib`), which the feature "
            "provider calls. TFLM's own `Arduino_TensorFlowLite` was removed from the Library "
            "Manager and can only be installed by cloning its repository. If the compiler "
            "cannot find `frontend_util.h`, render the sketch again with "
            '`library="arduino_tensorflowlite"` and use a clone of that library instead.'
        ),
    },
    "arduino_tensorflowlite": {
        "name": "Arduino_TensorFlowLite",
        "header": "TensorFlowLite.h",
        "text": (
            "The sketch uses **Arduino_TensorFlowLite**, TFLM's own Arduino library. It is not "
            "in the Library Manager: clone https://github.com/tensorflow/tflite-micro-arduino-"
            "examples into `~/Arduino/libraries/Arduino_TensorFlowLite` (the `arduino-cli lib "
            "install` line below does not apply)."
        ),
    },
}
"""TFLM libraries the sketch can be built with, by render option ``library``."""

SAMPLE_RATE = 16000
"""The rate the sketch records at (the PDM library's rate for this board's microphone)."""
PDM_GAIN = 13
"""PDM microphone gain, micro_speech's value for the Nano 33 BLE Sense."""
RING_SAMPLES = 8192
"""Audio ring buffer, samples (512 ms at 16 kHz, as micro_speech)."""
LIGHT_MS = 3000
"""How long the RGB LED shows a command (micro_speech's 3 s)."""
BAUD = 115200
"""Serial speed (USB CDC ignores it, but monitors ask for one)."""
PROFILE_LOOPS = 100
"""Inferences per PROFILE block by default."""

# Colours of wanted words in order (bit 0 red, bit 1 green, bit 2 blue): micro_speech shows the
# first word ("yes") green and the second ("no") red; unknown is blue; silence shows nothing.
_WORD_COLOURS = (2, 1, 3, 5, 6, 7)
_COLOUR_NAMES = {
    0: "off",
    1: "red",
    2: "green",
    3: "yellow",
    4: "blue",
    5: "magenta",
    6: "cyan",
    7: "white",
}
_FRONTEND_KEYS = (
    "lower_band_limit", "upper_band_limit", "smoothing_bits", "even_smoothing", "odd_smoothing",
    "min_signal_remaining", "enable_pcan", "pcan_strength", "pcan_offset", "gain_bits",
    "enable_log", "scale_shift",
)  # fmt: skip
_FLOAT_KEYS = frozenset(
    {"lower_band_limit", "upper_band_limit", "even_smoothing", "odd_smoothing",
     "min_signal_remaining", "pcan_strength", "pcan_offset"}
)  # fmt: skip

TEMPLATES: dict[str, tuple[str, str]] = {
    "ino": ("sketch.ino.j2", "{sketch}.ino"),
    "readme": ("README.md.j2", "README.md"),
    "model_data_h": ("model_data.h.j2", "model_data.h"),
    "model_data_cpp": ("model_data.cpp.j2", "model_data.cpp"),
    "model_settings_h": ("model_settings.h.j2", "model_settings.h"),
    "model_settings_cpp": ("model_settings.cpp.j2", "model_settings.cpp"),
    "recognize_commands_h": ("recognize_commands.h.j2", "recognize_commands.h"),
    "recognize_commands_cpp": ("recognize_commands.cpp.j2", "recognize_commands.cpp"),
    "serial_lines_h": ("serial_lines.h.j2", "serial_lines.h"),
    "audio_provider_h": ("audio_provider.h.j2", "audio_provider.h"),
    "audio_provider_cpp": ("audio_provider.cpp.j2", "audio_provider.cpp"),
    "feature_provider_h": ("feature_provider.h.j2", "feature_provider.h"),
    "feature_provider_cpp": ("feature_provider.cpp.j2", "feature_provider.cpp"),
    "command_responder_h": ("command_responder.h.j2", "command_responder.h"),
    "command_responder_cpp": ("command_responder.cpp.j2", "command_responder.cpp"),
}
"""File kind -> (template, file name in the sketch folder)."""

PORTABLE_KINDS = (
    "model_data_cpp", "model_settings_cpp", "recognize_commands_cpp",
)  # fmt: skip
"""The sources that compile without Arduino or TFLM headers (the host test builds them)."""

FACTS_FILE = "kwscompress.json"
"""The sketch's facts (arena, ops, input quantization) as JSON, beside the sources."""

OPTIONS = ("sketch_name", "library", "arena_bytes", "profile", "profile_loops")


@dataclass(frozen=True)
class SketchPlan:
    """What a sketch will contain, worked out before anything is written."""

    sketch_name: str
    model: ModelInfo
    arena_bytes: int
    arena_source: str
    """``measured`` (measured plus margin), ``default`` or ``option`` (given by the caller)."""
    frames: int
    channels: int
    feature_table: np.ndarray
    """int8 model input for each frontend value below the saturation point."""
    feature_saturated: int

    def facts(self) -> dict[str, Any]:
        """JSON-ready summary for the variant's ``deploy`` record."""
        return {
            "sketch": self.sketch_name,
            "tflite_bytes": len(self.model.data),
            "arena_bytes": self.arena_bytes,
            "arena_source": self.arena_source,
            "ops": list(self.model.ops),
            "input_scale": self.model.input.scale,
            "input_zero_point": self.model.input.zero_point,
        }


class ArduinoBackend:
    """Renders an Arduino sketch for the Nano 33 BLE Sense (TFLM micro_speech's design)."""

    name = "arduino"
    description = (
        "Arduino sketch for the Nano 33 BLE Sense: PDM mic, micro frontend, TFLM, recognizer"
    )

    def render(self, inputs: FirmwareInputs, out_dir: Path, **options: Any) -> dict[str, Path]:
        """Write the sketch into ``out_dir/<sketch name>/`` and return its files by kind.

        Kinds: ``sketch`` (the folder), those of :data:`TEMPLATES`, and ``facts``: a JSON file
        (:data:`FACTS_FILE`) with :meth:`SketchPlan.facts`.

        :param options: ``sketch_name`` (default ``kws_<variant id>``, made a valid name),
            ``library`` (``chirale``, the default, or ``arduino_tensorflowlite``),
            ``arena_bytes`` (overrides the measured arena), ``profile`` (bool: ``KWS_PROFILE``
            on, default off), ``profile_loops`` (inferences per PROFILE block, default 100).
        :raises KwsError: an unknown option, a model the sketch cannot run (not int8, wrong
            input or output size, an op it cannot register), features that are not ``micro``.
        """
        plan = plan_sketch(inputs, **options)
        context = _context(inputs, plan, options)
        env = template_environment()
        folder = Path(out_dir) / plan.sketch_name
        files: dict[str, Path] = {"sketch": folder}
        for kind, (template, filename) in TEMPLATES.items():
            path = folder / filename.format(sketch=plan.sketch_name)
            text = env.get_template(template).render(context)
            with atomic_open(path, "wb") as handle:
                handle.write(text.encode("utf-8"))
            files[kind] = path
        # What was decided, for the variant's deploy record (the caller need not import this
        # plugin to read it); the IDE and arduino-cli ignore the file.
        files["facts"] = folder / FACTS_FILE
        with atomic_open(files["facts"]) as handle:
            json.dump(plan.facts(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        return files


def template_environment() -> jinja2.Environment:
    """The Jinja2 environment over the templates shipped in ``kwscompress.firmware_templates``."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kwscompress.firmware_templates", "."),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def plan_sketch(inputs: FirmwareInputs, **options: Any) -> SketchPlan:
    """Check the inputs and work out the sketch's model-specific parts (see :class:`SketchPlan`).

    :raises KwsError: as :meth:`ArduinoBackend.render`.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise KwsError(
            f"unknown arduino backend option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}"
        )
    library = options.get("library", "chirale")
    if library not in LIBRARIES:
        raise KwsError(f"unknown library {library!r}; valid: {', '.join(LIBRARIES)}")
    model = read_model(inputs.tflite_path)
    features = inputs.features
    if features.get("name") != "micro":
        raise KwsError(
            f"the arduino backend needs a model trained on 'micro' features (the TFLM micro "
            f"frontend the board computes); variant {inputs.variant_id!r} used "
            f"{features.get('name')!r}"
        )
    channels = int(features.get("channels", features.get("bins", 0)))
    if int(features.get("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE:
        raise KwsError(
            f"the Nano 33 BLE Sense's PDM microphone records at {SAMPLE_RATE} Hz, but variant "
            f"{inputs.variant_id!r} was trained at {features.get('sample_rate')} Hz "
            "(data.sample_rate)"
        )
    for tensor, role in ((model.input, "input"), (model.output, "output")):
        if tensor.dtype != "INT8" or tensor.scale is None or tensor.zero_point is None:
            raise KwsError(
                f"{inputs.tflite_path} has a {tensor.dtype} {role}; the sketch needs a full-int8 "
                f"model (int8 input and output with a scale and zero point)"
            )
    if channels <= 0 or model.input.elements % channels:
        raise KwsError(
            f"{inputs.tflite_path}: input of {model.input.elements} values is not a whole number "
            f"of {channels}-channel frames (features.channels)"
        )
    if model.output.scale != 2**-8 or model.output.zero_point != -128:
        raise KwsError(
            f"{inputs.tflite_path}: output scale {model.output.scale} and zero point "
            f"{model.output.zero_point}; the recognizer reads scores + 128 as probabilities "
            "times 256, so the model must end in an int8 softmax (scale 1/256, zero point -128)"
        )
    loops = options.get("profile_loops", PROFILE_LOOPS)
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
        raise KwsError(f"profile_loops must be a whole number >= 1, got {loops!r}")
    if model.output.elements != len(inputs.labels):
        raise KwsError(
            f"{inputs.tflite_path} outputs {model.output.elements} scores but there are "
            f"{len(inputs.labels)} labels ({', '.join(map(repr, inputs.labels))})"
        )
    table, saturated = feature_table(
        model.input.scale, model.input.zero_point, float(features.get("output_scale", 10 / 256))
    )
    arena, source = arena_size(inputs.arena_bytes, options.get("arena_bytes"))
    name = options.get("sketch_name") or cpp.identifier(inputs.variant_id)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
        raise KwsError(
            f"sketch_name {name!r} is not a valid sketch name (letters, digits and _, starting "
            "with a letter, at most 63 characters)"
        )
    return SketchPlan(
        sketch_name=name,
        model=model,
        arena_bytes=arena,
        arena_source=source,
        frames=model.input.elements // channels,
        channels=channels,
        feature_table=table,
        feature_saturated=saturated,
    )


def feature_table(scale: float, zero_point: int, output_scale: float) -> tuple[np.ndarray, int]:
    """The int8 model input for each uint16 frontend value, up to where it stops changing.

    The value ``v`` was ``v * output_scale`` in training; the model quantizes that with its own
    ``scale`` and ``zero_point``. Returns ``(table, saturated)``: ``table[v]`` for ``v`` below
    the point from which every value maps to ``saturated``.
    """
    from kwscompress_features.micro import quantize_for_device

    # float32 product, as TensorFlow computes the training features.
    values = np.arange(65536, dtype=np.float32) * np.float32(output_scale)
    q = quantize_for_device(values, scale, zero_point)
    changes = np.nonzero(q != q[-1])[0]
    size = int(changes[-1]) + 1 if len(changes) else 1
    return q[:size].copy(), int(q[-1])


def arena_size(measured: int | None, override: int | None = None) -> tuple[int, str]:
    """The tensor arena in bytes and where it came from (see :data:`ARENA_MARGIN_FRACTION`).

    ``measured + max(ARENA_MARGIN_MIN_BYTES, ARENA_MARGIN_FRACTION * measured)`` rounded up to a
    multiple of :data:`ARENA_ROUND_BYTES`; :data:`DEFAULT_ARENA_BYTES` when not measured; an
    ``override`` is used as given (rounded up to 16 bytes).
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override <= 0:
            raise KwsError(f"arena_bytes must be a positive whole number, got {override!r}")
        return -(-override // 16) * 16, "option"
    if measured is None:
        return DEFAULT_ARENA_BYTES, "default"
    margin = max(ARENA_MARGIN_MIN_BYTES, math.ceil(measured * ARENA_MARGIN_FRACTION))
    return -(-(measured + margin) // ARENA_ROUND_BYTES) * ARENA_ROUND_BYTES, "measured"


def label_colours(labels: list[str]) -> list[int]:
    """RGB LED colour per label (bit 0 red, 1 green, 2 blue): off for index 0 (silence), blue
    for ``_unknown_``, then green, red, yellow, magenta, cyan, white for the words in order."""
    colours, word = [], 0
    for index, label in enumerate(labels):
        if index == 0:
            colours.append(0)
        elif label == "_unknown_":
            colours.append(4)
        else:
            colours.append(_WORD_COLOURS[word % len(_WORD_COLOURS)])
            word += 1
    return colours


def _context(inputs: FirmwareInputs, plan: SketchPlan, options: dict[str, Any]) -> dict[str, Any]:
    from kwscompress_features.micro import DEVICE_FRONTEND

    features = inputs.features
    sample_rate = SAMPLE_RATE
    window_ms, stride_ms = int(features["window_ms"]), int(features["stride_ms"])
    frontend = {}
    for key in _FRONTEND_KEYS:
        value = features.get(key, DEVICE_FRONTEND[key])
        frontend[key] = cpp.float_literal(value) if key in _FLOAT_KEYS else str(int(value))
    recognizer = RecognizerSettings.from_any(inputs.recognizer)
    library = LIBRARIES[options.get("library", "chirale")]
    labels = list(inputs.labels)
    colours = label_colours(labels)
    max_label = max(len(label.encode("utf-8")) for label in labels)
    if plan.arena_source == "measured":
        arena_note = (
            f"{inputs.arena_bytes} bytes measured in TFLM on the host, plus a margin of "
            f"max({ARENA_MARGIN_MIN_BYTES} B, {ARENA_MARGIN_FRACTION:.0%}) for CMSIS-NN scratch "
            f"buffers, rounded up to {ARENA_ROUND_BYTES} B"
        )
    elif plan.arena_source == "default":
        arena_note = "not measured; a generous default (the sketch prints ARENA used_bytes)"
    else:
        arena_note = "set by the arena_bytes option"
    model = plan.model
    return {
        "version": kwscompress.__version__,
        "variant_comment": cpp.comment_text(inputs.variant_id),
        "source_name": cpp.comment_text(Path(inputs.tflite_path).name),
        "sketch_name": plan.sketch_name,
        "model_len": len(model.data),
        "model_rows": cpp.byte_rows(model.data),
        "ops": list(model.ops),
        "resolver_methods": list(model.resolver_methods),
        "sample_rate": sample_rate,
        "window_ms": window_ms,
        "stride_ms": stride_ms,
        "window_samples": sample_rate * window_ms // 1000,
        "stride_samples": sample_rate * stride_ms // 1000,
        "channels": plan.channels,
        "frames": plan.frames,
        "frontend": frontend,
        "output_scale_text": repr(float(features.get("output_scale", 10 / 256))),
        "input_scale_text": repr(model.input.scale),
        "input_zero_point": model.input.zero_point,
        "feature_table": plan.feature_table.tolist(),
        "feature_rows": cpp.int_rows(plan.feature_table.tolist()),
        "feature_saturated": plan.feature_saturated,
        "labels": labels,
        "label_literals": [cpp.string_literal(label) for label in labels],
        "label_list": ", ".join(f"`{cpp.comment_text(label)}`" for label in labels),
        "colours": colours,
        "colour_list": ", ".join(
            f"`{cpp.comment_text(label)}` {_COLOUR_NAMES[c]}"
            for label, c in zip(labels, colours, strict=True)
        ),
        "heard_line_size": max_label + len("Heard  (255) @-2147483648ms") + 1,
        "recognizer": recognizer.as_dict(),
        "arena_bytes": plan.arena_bytes,
        "arena_note": arena_note,
        "library_name": library["name"],
        "library_header": library["header"],
        "library_text": library["text"],
        "ring_samples": RING_SAMPLES,
        "ring_ms": RING_SAMPLES * 1000 // sample_rate,
        "pdm_gain": PDM_GAIN,
        "light_ms": LIGHT_MS,
        "baud": BAUD,
        "profile": bool(options.get("profile", False)),
        "profile_loops": int(options.get("profile_loops", PROFILE_LOOPS)),
    }
