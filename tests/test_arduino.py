"""The ``arduino`` backend: the real templates rendered around TFLM's micro_speech model.

The portable part of the sketch (model data, settings and labels, recognizer, serial line
formats) is compiled on the host with g++ and driven by a small test program, so a template
change that breaks the C++, the model bytes, the labels or the recognizer's rules fails here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kwscompress.board_log import BoardLog
from kwscompress.config import FeatureConfig, RecognizerConfig
from kwscompress.errors import KwsError
from kwscompress.protocols import Backend, FirmwareInputs
from kwscompress.recognizer import RecognizeCommands, recognize_stream
from kwscompress_arduino import sketch
from kwscompress_arduino.sketch import NATIVE_PORTABLE_KINDS, PORTABLE_KINDS, arena_size
from kwscompress_features.micro import MicroFrontend

MODEL = Path(__file__).parent / "data" / "micro_speech_quantized.tflite"
LABELS = ["_silence_", "_unknown_", "yes", "no"]
ODD_LABELS = ["_silence_", "_unknown_", 'a"b\\c', "s\u00ed?\n??=*/ \U0001f600"]
CXX = shutil.which("g++")

DRIVER = r"""
#include <stdint.h>
#include <stdio.h>

#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "model_data.h"
#include "model_settings.h"
#include "recognize_commands.h"
#include "serial_lines.h"

// Host driver: dumps the model and labels, then answers commands on stdin:
//   N window threshold suppression minimum   a fresh recognizer with these settings
//   S time s0 s1 ...                          feed scores; prints R time index score new
//   F value                                   prints F value FeatureToInt8(value)
//   T stage us us ...                         prints the PROFILE line of those durations
int main(int argc, char** argv) {
  if (argc > 1) {
    FILE* out = fopen(argv[1], "wb");
    fwrite(g_model, 1, g_model_len, out);
    fclose(out);
  }
  printf("MODEL %d %d\n", g_model_len, static_cast<int>(reinterpret_cast<uintptr_t>(g_model) % 16));
  for (int i = 0; i < kws::kCategoryCount; ++i) {
    printf("LABEL %d ", i);
    for (const char* p = kws::kCategoryLabels[i]; *p; ++p) {
      printf("%02x", static_cast<unsigned char>(*p));
    }
    printf("\n");
  }
  std::unique_ptr<kws::RecognizeCommands> recognizer(new kws::RecognizeCommands());
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    in >> command;
    if (command == "N") {
      long window, threshold, suppression, minimum;
      in >> window >> threshold >> suppression >> minimum;
      recognizer.reset(new kws::RecognizeCommands(window, static_cast<uint8_t>(threshold),
                                                  suppression, minimum));
    } else if (command == "S") {
      long time_ms;
      in >> time_ms;
      int8_t scores[kws::kCategoryCount];
      for (int i = 0; i < kws::kCategoryCount; ++i) {
        int value;
        in >> value;
        scores[i] = static_cast<int8_t>(value);
      }
      kws::Recognition r;
      if (!recognizer->ProcessLatestResults(scores, static_cast<int32_t>(time_ms), &r)) {
        printf("REFUSED %ld\n", time_ms);
        continue;
      }
      printf("R %ld %d %d %d\n", time_ms, r.label_index, r.score, r.is_new ? 1 : 0);
      if (r.is_new) {
        char heard[kws::kHeardLineSize];
        kws::FormatHeardLine(heard, sizeof(heard), r.label, r.score, static_cast<int32_t>(time_ms));
        printf("%s\n", heard);
      }
    } else if (command == "F") {
      long value;
      in >> value;
      printf("F %ld %d\n", value, kws::FeatureToInt8(static_cast<uint16_t>(value)));
    } else if (command == "T") {
      std::string stage;
      in >> stage;
      kws::StageTimer timer;
      unsigned long micros;
      while (in >> micros) timer.Add(static_cast<uint32_t>(micros));
      char text[128];
      kws::FormatProfileLine(text, sizeof(text), stage.c_str(), timer);
      printf("%s\n", text);
    }
  }
  return 0;
}
"""


def micro_features() -> dict:
    return {"name": "micro", **MicroFrontend().settings(FeatureConfig(), 16000)}


def inputs(labels=LABELS, recognizer=None, arena=9000, **changes) -> FirmwareInputs:
    values = {
        "variant_id": "qat-8b",
        "tflite_path": MODEL,
        "labels": list(labels),
        "features": micro_features(),
        "arena_bytes": arena,
        "recognizer": recognizer or dataclasses.asdict(RecognizerConfig()),
    }
    values.update(changes)
    return FirmwareInputs(**values)


@pytest.fixture
def backend(pm):
    return pm.component("backend", "arduino")


def build_driver(files: dict[str, Path], out: Path) -> Path:
    driver = out / "driver.cpp"
    driver.write_text(DRIVER)
    exe = out / "driver"
    sources = [str(files[kind]) for kind in PORTABLE_KINDS]
    command = [
        CXX,
        "-std=c++17",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-I",
        str(files["sketch"]),
    ]
    subprocess.run(
        [*command, "-o", str(exe), str(driver), *sources],
        check=True,
        capture_output=True,
        text=True,
    )
    return exe


def drive(exe: Path, commands: list[str], dump: Path | None = None) -> list[str]:
    args = [str(exe)] + ([str(dump)] if dump else [])
    done = subprocess.run(
        args, input="\n".join(commands) + "\n", capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def score_commands(times, scores) -> list[str]:
    return [
        f"S {t} " + " ".join(str(int(v)) for v in row) for t, row in zip(times, scores, strict=True)
    ]


def test_the_backend_is_registered_and_satisfies_the_protocol(backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "arduino"


def test_model_bytes_ops_and_arena_come_from_the_model(backend, tmp_path: Path) -> None:
    files = backend.render(inputs(), tmp_path)
    assert files["sketch"] == tmp_path / "kws_qat_8b"
    assert files["ino"].name == "kws_qat_8b.ino"
    source = files["model_data_cpp"].read_text()
    assert "alignas(16) const unsigned char g_model[]" in source
    body = source[source.index("g_model[] = {") : source.index("};")]
    parsed = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))
    assert parsed == MODEL.read_bytes()
    assert f"const int g_model_len = {len(parsed)};" in source

    ino = files["ino"].read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(\)", ino)
    assert sorted(methods) == [
        "AddDepthwiseConv2D",
        "AddFullyConnected",
        "AddReshape",
        "AddSoftmax",
    ]
    assert "MicroMutableOpResolver<4> resolver;" in ino
    assert "#include <Chirale_TensorFlowLite.h>" in ino
    settings = files["model_settings_h"].read_text()
    # 9000 measured + max(2048, 2250) = 11250, rounded up to 1024 -> 11264.
    assert "constexpr int kTensorArenaSize = 11264;" in settings
    assert (
        "constexpr int kFeatureFrames = 49;" in settings
        and "constexpr int kFeatureChannels = 40;" in settings
    )
    assert (
        "constexpr int kWindowSamples = 480;" in settings
        and "constexpr int kStrideSamples = 320;" in settings
    )
    assert "constexpr float kPcanStrength = 0.95f;" in settings
    assert (
        "arduino-cli compile --fqbn arduino:mbed_nano:nano33ble kws_qat_8b"
        in files["readme"].read_text()
    )
    facts = json.loads(files["facts"].read_text())
    assert facts["arena_bytes"] == 11264 and facts["arena_source"] == "measured"
    assert facts["tflite_bytes"] == 18800 and facts["input_zero_point"] == -128
    assert sorted(facts["ops"]) == sorted(
        ["DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"]
    )


def test_rendering_twice_gives_identical_bytes(backend, tmp_path: Path) -> None:
    first = backend.render(inputs(labels=ODD_LABELS), tmp_path / "a")
    second = backend.render(inputs(labels=ODD_LABELS), tmp_path / "b")
    for kind, path in first.items():
        if kind != "sketch":
            assert path.read_bytes() == second[kind].read_bytes(), kind
    assert sorted(p.name for p in first["sketch"].iterdir()) == sorted(
        p.name for p in second["sketch"].iterdir()
    )


def test_arena_margin_and_default() -> None:
    assert arena_size(None) == (64 * 1024, "default")
    assert arena_size(1000) == (3072, "measured")  # 1000 + 2048 = 3048 -> 3072
    assert arena_size(40000) == (50176, "measured")  # 40000 + 10000 = 50000 -> 49 * 1024
    assert arena_size(40000, 5000) == (5008, "option")


def test_unusable_inputs_are_refused_with_the_reason(backend, tmp_path: Path) -> None:
    with pytest.raises(KwsError, match="'micro' features"):
        backend.render(inputs(features={**micro_features(), "name": "mfcc"}), tmp_path)
    with pytest.raises(KwsError, match="records at 16000 Hz"):
        backend.render(inputs(features={**micro_features(), "sample_rate": 22050}), tmp_path)
    with pytest.raises(KwsError, match="outputs 4 scores but there are 3 labels"):
        backend.render(inputs(labels=LABELS[:3]), tmp_path)
    with pytest.raises(KwsError, match="not a whole number of 33-channel frames"):
        backend.render(inputs(features={**micro_features(), "channels": 33}), tmp_path)
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(KwsError, match="not a TFLite model"):
        backend.render(inputs(tflite_path=bogus), tmp_path)
    with pytest.raises(KwsError, match="unknown arduino backend option"):
        backend.render(inputs(), tmp_path, colour="red")
    with pytest.raises(KwsError, match="profile_loops"):
        backend.render(inputs(), tmp_path, profile=True, profile_loops=0)
    with pytest.raises(KwsError, match="sketch_name"):
        backend.render(inputs(), tmp_path, sketch_name="9 lives")
    assert not any(tmp_path.rglob("*.ino"))


@pytest.mark.skipif(CXX is None, reason="needs g++")
def test_portable_cpp_compiles_and_holds_the_model_and_any_label(backend, tmp_path: Path) -> None:
    odd_id = 'ptq "4b"\\\n*/ \u00fc'  # quotes, a backslash, a newline, a comment end, non-ASCII
    files = backend.render(inputs(labels=ODD_LABELS, variant_id=odd_id), tmp_path / "sketch")
    assert files["sketch"].name == "kws_ptq__4b"
    exe = build_driver(files, tmp_path)
    dump = tmp_path / "model.bin"
    out = drive(exe, [], dump)
    assert dump.read_bytes() == MODEL.read_bytes()
    assert out[0] == f"MODEL {MODEL.stat().st_size} 0"  # length, and address % 16 == 0
    assert out[1:] == [f"LABEL {i} {label.encode().hex()}" for i, label in enumerate(ODD_LABELS)]


@pytest.mark.skipif(CXX is None, reason="needs g++")
def test_feature_mapping_uses_the_models_input_scale(backend, tmp_path: Path) -> None:
    files = backend.render(inputs(), tmp_path / "sketch")
    exe = build_driver(files, tmp_path)
    values = [*range(0, 700), 1000, 65535]
    out = [line for line in drive(exe, [f"F {v}" for v in values]) if line.startswith("F ")]
    got = [int(line.split()[2]) for line in out]
    # The model's input: scale 0.10171568..., zero point -128 (read by hand with the schema);
    # training fed v * 10/256. Half-way cases round up (values are non-negative).
    scale = float(np.float32(0.10171568393707275))
    expected = [min(127, int(np.floor(v * 10 / 256 / scale + 0.5)) - 128) for v in values]
    assert got == expected
    assert got[0] == -128 and got[-1] == 127


SHORT = (300, 200, 1000, 3)  # window, threshold, suppression, minimum count


def p(silence=0, unknown=0, yes=0, no=0) -> list[int]:
    return [v - 128 for v in (silence, unknown, yes, no)]


SEQUENCES = {
    "clean keyword": (list(range(0, 1100, 100)), [p(100)] * 2 + [p(yes=255)] * 5 + [p(100)] * 4),
    "two close keywords": (
        list(range(0, 1800, 100)),
        [p(100)] * 2 + [p(yes=255)] * 4 + [p(100)] * 4 + [p(yes=255)] * 8,
    ),
    "below threshold bump": (list(range(0, 900, 100)), [p(55, yes=200)] * 4 + [p(60, yes=195)] * 5),
    "too few results": ([0, 10, 20, 30, 500, 1000, 1500], [p(yes=255)] * 7),
    "label switch": (list(range(0, 1000, 100)), [p(100)] * 2 + [p(yes=255)] * 4 + [p(no=255)] * 4),
}


@pytest.mark.skipif(CXX is None, reason="needs g++")
def test_cpp_recognizer_fires_like_the_python_reference(backend, tmp_path: Path) -> None:
    files = backend.render(inputs(), tmp_path / "sketch")
    exe = build_driver(files, tmp_path)
    window, threshold, suppression, minimum = SHORT
    settings = dict(
        zip(
            ("average_window_ms", "detection_threshold", "suppression_ms", "minimum_count"),
            SHORT,
            strict=True,
        )
    )
    rng = np.random.default_rng(0)
    random_times = np.cumsum(rng.integers(0, 120, 300))
    random_scores = rng.integers(-128, 128, (300, 4))
    random_scores[100:160, 2] = 127  # a long "yes" so that something fires
    cases = {**SEQUENCES, "random": (random_times.tolist(), random_scores.tolist())}
    fired_somewhere = set()
    for name, (times, scores) in cases.items():
        out = drive(
            exe, [f"N {window} {threshold} {suppression} {minimum}", *score_commands(times, scores)]
        )
        python = RecognizeCommands(LABELS, settings)
        expected = []
        for t, row in zip(times, scores, strict=True):
            r = python.process(t, np.array(row))
            expected.append(f"R {t} {LABELS.index(r.label)} {r.score} {int(r.is_new)}")
        assert [line for line in out if line.startswith("R ")] == expected, name
        heard = BoardLog().feed_all(out).recognitions
        assert heard == recognize_stream(times, np.array(scores), LABELS, settings), name
        fired_somewhere.update(label for _, label, _ in heard)
    assert {"yes", "no"} <= fired_somewhere


@pytest.mark.skipif(CXX is None, reason="needs g++")
def test_recognizer_settings_are_rendered_into_the_cpp_defaults(backend, tmp_path: Path) -> None:
    settings = {
        "average_window_ms": 500,
        "detection_threshold": 150,
        "suppression_ms": 700,
        "minimum_count": 2,
    }
    files = backend.render(inputs(recognizer=settings), tmp_path / "sketch")
    exe = build_driver(files, tmp_path)
    times = list(range(0, 3000, 50))
    scores = [p(yes=170)] * 20 + [p(no=160)] * 20 + [p(200)] * 20
    out = drive(exe, score_commands(times, scores))  # the default-constructed recognizer
    fired = BoardLog().feed_all(out).recognitions
    assert fired == recognize_stream(times, np.array(scores), LABELS, settings)
    assert fired and fired != recognize_stream(times, np.array(scores), LABELS, RecognizerConfig())


@pytest.mark.skipif(CXX is None, reason="needs g++")
def test_profile_lines_of_the_cpp_formatter_parse_back(backend, tmp_path: Path) -> None:
    files = backend.render(inputs(), tmp_path / "sketch")
    exe = build_driver(files, tmp_path)
    out = drive(
        exe,
        ["T preprocess 1500 2500 2000", "T inference 90001 89999 90000", "T postprocess 7 9 11"],
    )
    assert "PROFILE inference_ms min=89.999 max=90.001 avg=90.000 n=3" in out
    (block,) = BoardLog().feed_all(out).blocks
    assert block["preprocess"].min_ms == 1.5 and block["preprocess"].avg_ms == 2.0
    assert block["postprocess"].max_ms == 0.011 and block["postprocess"].n == 3


# The micro frontend's C API as the TensorFlow wheel's op library exports it (the same C library
# the board compiles). The state is only ever passed by pointer, so it is declared opaque here.
FRONTEND_H = r"""
#pragma once
#include <stddef.h>
#include <stdint.h>
extern "C" {
struct FrontendState { alignas(16) unsigned char opaque[8192]; };
struct FrontendOutput { const uint16_t* values; size_t size; };
struct FrontendOutput FrontendProcessSamples(struct FrontendState*, const int16_t*, size_t,
                                             size_t*);
void FrontendReset(struct FrontendState*);
}
"""
FRONTEND_UTIL_H = r"""
#pragma once
#include "tensorflow/lite/experimental/microfrontend/lib/frontend.h"
extern "C" {
struct WindowConfig { size_t size_ms; size_t step_size_ms; };
struct FilterbankConfig { int num_channels; float upper_band_limit; float lower_band_limit;
                          int output_scale_shift; };
struct NoiseReductionConfig { int smoothing_bits; float even_smoothing; float odd_smoothing;
                              float min_signal_remaining; };
struct PcanGainControlConfig { int enable_pcan; float strength; float offset; int gain_bits; };
struct LogScaleConfig { int enable_log; int scale_shift; };
struct FrontendConfig { struct WindowConfig window; struct FilterbankConfig filterbank;
                        struct NoiseReductionConfig noise_reduction;
                        struct PcanGainControlConfig pcan_gain_control;
                        struct LogScaleConfig log_scale; };
void FrontendFillConfigWithDefaults(struct FrontendConfig*);
int FrontendPopulateState(const struct FrontendConfig*, struct FrontendState*, int);
}
"""
# Stands in for the PDM microphone: a recorded clip that "arrives" 100 ms at a time.
FEATURE_DRIVER = r"""
#include <stdio.h>
#include <vector>
#include "audio_provider.h"
#include "feature_provider.h"

static std::vector<int16_t> clip;
static uint32_t recorded = 0;

namespace kws {
bool InitAudioRecording() { return true; }
uint32_t LatestSampleIndex() { return recorded; }
bool GetAudioSamples(uint32_t first, uint32_t count, int16_t* out) {
  if (recorded - first < count || recorded - first > kAudioRingSamples) return false;
  for (uint32_t i = 0; i < count; ++i) out[i] = clip[first + i];
  return true;
}
}  // namespace kws

int main(int, char** argv) {
  FILE* in = fopen(argv[1], "rb");
  int16_t sample;
  while (fread(&sample, 2, 1, in) == 1) clip.push_back(sample);
  fclose(in);
  static int8_t features[kws::kFeatureElementCount];
  kws::FeatureProvider provider(features);
  if (!provider.Init()) return 1;
  int slices = 0;
  int32_t time_ms = -1;
  while (recorded < clip.size()) {
    recorded = recorded + 1600 < clip.size() ? recorded + 1600 : clip.size();
    int added = 0;
    if (!provider.Update(&added, &time_ms)) return 2;
    slices += added;
  }
  printf("SLICES %d TIME %ld FULL %d\n", slices, static_cast<long>(time_ms),
         provider.Full() ? 1 : 0);
  for (int i = 0; i < kws::kFeatureElementCount; ++i) printf("%d\n", features[i]);
  return 0;
}
"""


def frontend_library() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(spec.submodule_search_locations[0])
    library = root / "lite/experimental/microfrontend/python/ops/_audio_microfrontend_op.so"
    return library if library.exists() else None


@pytest.mark.skipif(CXX is None or frontend_library() is None, reason="needs g++ and TF's frontend")
def test_device_features_equal_the_training_features_quantized(backend, tmp_path: Path) -> None:
    """The rendered feature provider, run on the frontend's C library, gives the model exactly
    the int8 input the host computes from the training features."""
    from support import tone

    from kwscompress_features.micro import quantize_for_device

    files = backend.render(inputs(), tmp_path / "sketch")
    headers = tmp_path / "include/tensorflow/lite/experimental/microfrontend/lib"
    headers.mkdir(parents=True)
    (headers / "frontend.h").write_text(FRONTEND_H)
    (headers / "frontend_util.h").write_text(FRONTEND_UTIL_H)
    (tmp_path / "driver.cpp").write_text(FEATURE_DRIVER)
    library = frontend_library()
    exe = tmp_path / "features"
    sources = [files["feature_provider_cpp"], files["model_settings_cpp"], tmp_path / "driver.cpp"]
    subprocess.run(
        [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path / "include"),
         "-I", str(files["sketch"]), "-o", str(exe), *map(str, sources), str(library),
         f"-Wl,-rpath,{library.parent}", f"-Wl,-rpath,{library.parents[4]}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    pcm = np.clip(tone(700.0, seed=5) * 32768, -32768, 32767).astype(np.int16)
    pcm.tofile(tmp_path / "clip.raw")
    out = subprocess.run([str(exe), str(tmp_path / "clip.raw")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # 49 windows of 480 samples every 320; the last ends at sample 15840 = 990 ms.
    assert lines[0] == "SLICES 49 TIME 990 FULL 1"
    device = np.array([int(v) for v in lines[1:]], np.int8).reshape(49, 40)
    # The driver's frontend starts afresh on this one clip: compare with a fresh host frontend.
    fresh = FeatureConfig(warmup_ms=0)
    training = MicroFrontend().extract(pcm[None].astype(np.float32) / 32768, fresh, 16000)
    host = quantize_for_device(training[0], 0.10171568393707275, -128)
    assert np.array_equal(device, host)
    assert len(np.unique(device)) > 20  # a real spectrogram, not a constant


# ---- runtime "native": the model as generated C (kwscompress_native) instead of TFLM ----------

CC = shutil.which("gcc")

NATIVE_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <iostream>
#include <sstream>
#include <string>

#include "kws_model.h"
#include "model_settings.h"
#include "recognize_commands.h"

// Host driver of the native sketch's model path, line by line on stdin:
//   I q0 q1 ...   int8 model input          -> O s0 s1 ... (int8 scores)
//   Q v0 v1 ...   uint16 frontend values, mapped with FeatureToInt8 as the sketch does -> O ...
// Each inference is done as the .ino does it: copy into the model input, kws_invoke(), hand
// the output to the recognizer.
int main() {
  static_assert(KWS_MODEL_INPUT_BYTES == kws::kFeatureElementCount, "input size");
  static_assert(KWS_MODEL_OUTPUT_BYTES == kws::kCategoryCount, "output size");
  int8_t* const model_input = kws_arena + KWS_MODEL_INPUT_OFFSET;
  const int8_t* const model_output = kws_arena + KWS_MODEL_OUTPUT_OFFSET;
  kws::RecognizeCommands recognizer;
  int8_t features[kws::kFeatureElementCount];
  std::string line;
  int32_t time_ms = 0;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    in >> command;
    for (int i = 0; i < kws::kFeatureElementCount; ++i) {
      long value = 0;
      in >> value;
      features[i] = command == "Q" ? kws::FeatureToInt8(static_cast<uint16_t>(value))
                                   : static_cast<int8_t>(value);
    }
    memcpy(model_input, features, kws::kFeatureElementCount);
    kws_invoke();
    kws::Recognition recognition;
    recognizer.ProcessLatestResults(model_output, time_ms += 20, &recognition);
    printf("O");
    for (int i = 0; i < kws::kCategoryCount; ++i) printf(" %d", model_output[i]);
    printf("\n");
  }
  return 0;
}
"""


def build_native_driver(files: dict[str, Path], out: Path) -> Path:
    """Compile the rendered sketch's portable parts as C99 and C++17, warnings as errors."""
    driver = out / "native_driver.cpp"
    driver.write_text(NATIVE_DRIVER)
    include = ["-I", str(files["sketch"])]
    model_object = out / "kws_model.o"
    run = dict(check=True, capture_output=True, text=True)
    warnings = ["-O2", "-Wall", "-Wextra", "-Werror", *include]
    model_c = str(files["native_model_c"])
    subprocess.run([CC, "-std=c99", *warnings, "-c", model_c, "-o", str(model_object)], **run)
    exe = out / "native_driver"
    cpp_sources = [str(files[kind]) for kind in NATIVE_PORTABLE_KINDS]
    subprocess.run(
        [
            CXX,
            "-std=c++17",
            *warnings,
            "-o",
            str(exe),
            str(driver),
            *cpp_sources,
            str(model_object),
        ],
        **run,
    )
    return exe


def tflm_scores(model_inputs: np.ndarray, model: Path = MODEL) -> np.ndarray:
    """TFLM's int8 outputs for each int8 input (its Python interpreter, reference kernels)."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model.read_bytes())
    shape = interpreter.get_input_details(0)["shape"]
    outputs = []
    for x in model_inputs:
        interpreter.set_input(x.reshape(shape).astype(np.int8), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), np.int8).reshape(-1))
    return np.stack(outputs)


def test_native_runtime_sketch_holds_generated_code_and_no_interpreter(
    backend, tmp_path: Path
) -> None:
    tflm = backend.render(inputs(), tmp_path / "tflm")
    files = backend.render(inputs(), tmp_path / "native", runtime="native")
    folder = files["sketch"]
    names = {p.name for p in folder.iterdir()}
    assert {"kws_model.c", "kws_model.h", "kws_kernels.h"} <= names
    assert not names & {"model_data.h", "model_data.cpp"}
    assert "model_data_cpp" not in files and "native_model_c" not in tflm
    source = files["native_model_c"].read_text()
    assert "void kws_invoke(void)" in source and '#include "kws_model.h"' in source
    header = files["native_model_h"].read_text()
    assert 'extern "C" {' in header and "void kws_invoke(void);" in header
    ino = files["ino"].read_text()
    for absent in ("MicroMutableOpResolver", "MicroInterpreter", "tensor_arena", "g_model"):
        assert absent not in ino, absent
    assert '#include "kws_model.h"' in ino and "kws_invoke();" in ino
    assert "#include <Chirale_TensorFlowLite.h>" in ino  # the micro frontend's library
    assert "kTensorArenaSize" not in files["model_settings_h"].read_text()
    # The input table, labels and recognizer are those of the tflm sketch, byte for byte.
    for kind in ("model_settings_cpp", "recognize_commands_cpp", "feature_provider_cpp"):
        assert files[kind].read_bytes() == tflm[kind].read_bytes(), kind
    # Same PROFILE stages and formats.
    profile = [line for line in ino.splitlines() if "Profile" in line or "PROFILE" in line]
    assert profile == [
        line
        for line in tflm["ino"].read_text().splitlines()
        if "Profile" in line or "PROFILE" in line
    ]
    facts = json.loads(files["facts"].read_text())
    assert facts["runtime"] == "native" and facts["arena_bytes"] is None
    assert facts["requires"]["tflm_interpreter"] is False
    assert facts["requires"]["library_for"] == ["micro frontend"]
    assert facts["native"]["macs"] == 336000  # 25x20x8 outputs x 80 taps + 4000 x 4
    assert json.loads(tflm["facts"].read_text())["runtime"] == "tflm"
    readme = files["readme"].read_text()
    assert "Runtime: **native**" in readme and "micro frontend only" in readme
    assert "ARENA used_bytes" not in readme


def test_switching_runtime_removes_the_other_runtimes_files(backend, tmp_path: Path) -> None:
    folder = backend.render(inputs(), tmp_path)["sketch"]
    assert (folder / "model_data.cpp").is_file()
    backend.render(inputs(), tmp_path, runtime="native")
    assert not (folder / "model_data.cpp").exists() and (folder / "kws_model.c").is_file()
    backend.render(inputs(), tmp_path)
    assert not (folder / "kws_model.c").exists() and (folder / "model_data.cpp").is_file()


def test_native_rendering_is_deterministic(backend, tmp_path: Path) -> None:
    first = backend.render(inputs(labels=ODD_LABELS), tmp_path / "a", runtime="native")
    second = backend.render(inputs(labels=ODD_LABELS), tmp_path / "b", runtime="native")
    for kind, path in first.items():
        if kind != "sketch":
            assert path.read_bytes() == second[kind].read_bytes(), kind
    assert sorted(p.name for p in first["sketch"].iterdir()) == sorted(
        p.name for p in second["sketch"].iterdir()
    )


def test_unknown_runtime_and_missing_native_plugin_are_refused(
    backend, tmp_path: Path, monkeypatch
) -> None:
    with pytest.raises(KwsError, match=r"runtime 'cmsis'.*valid: tflm, native"):
        backend.render(inputs(), tmp_path, runtime="cmsis")
    with pytest.raises(KwsError, match="arena_bytes does not apply to runtime 'native'"):
        backend.render(inputs(), tmp_path, runtime="native", arena_bytes=4096)
    monkeypatch.setitem(sys.modules, "kwscompress_native", None)  # as if not installed
    with pytest.raises(KwsError, match="needs the kwscompress_native plugin"):
        backend.render(inputs(), tmp_path, runtime="native")
    assert not any(tmp_path.rglob("*"))


@pytest.mark.skipif(CXX is None or CC is None, reason="needs g++ and gcc")
def test_native_sketch_builds_on_the_host_and_scores_exactly_as_tflm(
    backend, tmp_path: Path
) -> None:
    files = backend.render(inputs(), tmp_path / "sketch", runtime="native")
    exe = build_native_driver(files, tmp_path)
    rng = np.random.default_rng(7)
    n = 49 * 40
    model_inputs = np.concatenate(
        [
            rng.integers(-128, 128, (5, n)),
            np.full((1, n), -128),
            np.full((1, n), 127),
        ]
    ).astype(np.int8)
    # Frontend values through the sketch's FeatureToInt8, and the same values quantized here.
    frontend = rng.integers(0, 1200, (3, n))
    table = np.array(sketch.plan_sketch(inputs()).feature_table, np.int8)
    saturated = sketch.plan_sketch(inputs()).feature_saturated
    mapped = np.where(frontend < len(table), table[np.minimum(frontend, len(table) - 1)], saturated)
    commands = [f"I {' '.join(map(str, x))}" for x in model_inputs]
    commands += [f"Q {' '.join(map(str, v))}" for v in frontend]
    out = drive(exe, commands)
    ours = np.array([[int(v) for v in line.split()[1:]] for line in out], np.int8)
    expected = tflm_scores(np.concatenate([model_inputs, mapped.astype(np.int8)]))
    assert ours.shape == (10, 4)
    np.testing.assert_array_equal(ours, expected)
    assert len({tuple(row) for row in ours}) > 1  # the inputs do change the scores


def test_deploy_cli_passes_the_runtime(tmp_path: Path, capsys) -> None:
    from kwscompress.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "--help"])
    assert "--runtime {tflm,native}" in capsys.readouterr().out
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    shutil.copyfile(MODEL, run / "export" / "model.tflite")
    tflite = {"status": "ok", "dir": "export", "files": {"tflite": "model.tflite"}}
    results = {
        "variants": [{"id": "qat-8b", "export": {"tflite": tflite}}],
        "features": {"extractor": "micro", "settings": micro_features()},
        "data": {"labels": LABELS},
    }
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "fw"
    args = ["deploy", str(run), "--variant", "qat-8b", "--out", str(out), "--runtime", "native"]
    assert main(args) == 0
    assert json.loads((out / "kws_qat_8b" / "kwscompress.json").read_text())["runtime"] == "native"
    assert not (out / "kws_qat_8b" / "model_data.cpp").exists()


def test_native_model_source_cross_compiles_for_the_m4_with_simd(backend, tmp_path: Path) -> None:
    """The sketch's copy of the generated C, built as for the Nano 33 BLE (Cortex-M4, so
    __ARM_FEATURE_DSP is defined): warning-free, and the ACLE path really emits SMLAD."""
    import capstone
    from elftools.elf.elffile import ELFFile

    files = backend.render(inputs(), tmp_path / "sketch", runtime="native")
    obj = tmp_path / "kws_model_m4.o"
    command = [
        sys.executable, "-m", "ziglang", "cc", "-target", "thumb-freestanding-eabihf",
        "-mcpu=cortex_m4", "-O2", "-std=c99", "-ffreestanding", "-Wall", "-Wextra", "-Werror",
        "-I", str(files["sketch"]), "-c", str(files["native_model_c"]), "-o", str(obj),
    ]  # fmt: skip
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    )
    md = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
    mnemonics = set()
    with open(obj, "rb") as handle:
        for section in ELFFile(handle).iter_sections():
            if section.name.startswith(".text"):
                mnemonics.update(i.mnemonic for i in md.disasm(section.data(), 0))
    assert "smlad" in mnemonics and "sxtb16" in mnemonics


@pytest.fixture(scope="module")
def converted_tiny_conv(tmp_path_factory) -> Path:
    """A tiny_conv-shaped Keras model (CONV_2D, not micro_speech's DEPTHWISE_CONV_2D) with
    random weights, converted to full int8 by the TFLite converter."""
    from kwscompress.tf_import import import_tensorflow

    tf = import_tensorflow()
    k = tf.keras
    k.utils.set_random_seed(1)
    inp = k.Input((49, 40, 1), batch_size=1)
    x = k.layers.Conv2D(4, (10, 8), strides=2, padding="same", activation="relu")(inp)
    x = k.layers.Softmax()(k.layers.Dense(4)(k.layers.Flatten()(x)))
    rng = np.random.default_rng(1)

    def representative():
        for _ in range(16):
            yield [rng.uniform(0, 26, (1, 49, 40, 1)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(k.Model(inp, x))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("converted") / "tiny_conv.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.mark.skipif(CXX is None or CC is None, reason="needs g++ and gcc")
def test_native_sketch_of_a_converted_model_scores_exactly_as_tflm(
    backend, tmp_path: Path, converted_tiny_conv: Path
) -> None:
    files = backend.render(
        inputs(tflite_path=converted_tiny_conv), tmp_path / "sketch", runtime="native"
    )
    assert "CONV_2D" in json.loads(files["facts"].read_text())["ops"]
    exe = build_native_driver(files, tmp_path)
    x = np.random.default_rng(3).integers(-128, 128, (4, 49 * 40)).astype(np.int8)
    out = drive(exe, [f"I {' '.join(map(str, row))}" for row in x])
    ours = np.array([[int(v) for v in line.split()[1:]] for line in out], np.int8)
    np.testing.assert_array_equal(ours, tflm_scores(x, converted_tiny_conv))
    assert len({tuple(row) for row in ours}) > 1  # the inputs do change the scores
