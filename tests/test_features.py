"""The built-in feature extractors: device match, shapes, cache keys, import order, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import kwscompress
import kwscompress_features
from kwscompress.config import FeatureConfig
from kwscompress.errors import KwsError
from kwscompress.plugins import PluginManager
from kwscompress.protocols import FeatureExtractor
from kwscompress_features import LogMel, LogSpectrogram, Mfcc, MicroFrontend, quantize_for_device

CLIPS = Path(kwscompress.__file__).parent / "data" / "reference_clips"
MODEL = Path(__file__).parent / "data" / "micro_speech_quantized.tflite"
DEVICE_LABELS = ["silence", "unknown", "yes", "no"]
RATE = 16000
EXTRACTORS = [MicroFrontend(), LogSpectrogram(), LogMel(), Mfcc()]
EXTRACTOR_IDS = [e.name for e in EXTRACTORS]


@pytest.fixture(scope="module")
def reference_clips() -> np.ndarray:
    """The four real 1 s clips: yes, no, noise, silence."""
    clips = []
    for name in ("yes", "no", "noise", "silence"):
        audio, rate = soundfile.read(CLIPS / f"{name}_1000ms.wav", dtype="float32")
        assert rate == RATE and audio.shape == (RATE,)
        clips.append(audio)
    return np.stack(clips)


@pytest.fixture(scope="module")
def micro_features(reference_clips: np.ndarray) -> np.ndarray:
    # Afresh, as TFLM's training scripts computed the features its model learned.
    return MicroFrontend().extract(reference_clips, FeatureConfig(warmup_ms=0), RATE)


def test_micro_features_drive_the_device_model_to_the_right_labels(
    micro_features: np.ndarray,
) -> None:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(MODEL))
    quant = interpreter.get_input_details(0)["quantization_parameters"]
    scale, zero_point = float(quant["scales"][0]), int(quant["zero_points"][0])
    labels, scores = [], []
    for features in micro_features:
        interpreter.set_input(quantize_for_device(features.reshape(1, -1), scale, zero_point), 0)
        interpreter.invoke()
        output = interpreter.get_output(0)[0]
        labels.append(DEVICE_LABELS[int(np.argmax(output))])
        scores.append(output.tolist())
    assert labels == ["yes", "no", "silence", "silence"], scores
    # Speech must be recognised with confidence, not by a hair (softmax scale 1/256, zp -128).
    assert scores[0][2] > 100 and scores[1][3] > 100, scores


def test_micro_features_are_in_the_trained_range(micro_features: np.ndarray) -> None:
    assert micro_features.shape == (4, 49, 40) and micro_features.dtype == np.float32
    # The frontend's uint16 output times 10/256: non-negative multiples of 10/256, below ~26.
    assert micro_features.min() >= 0 and 15 < micro_features.max() < 26.5
    steps = micro_features / (10 / 256)
    np.testing.assert_array_equal(steps, np.round(steps))
    # Speech is louder than the silence clip.
    assert micro_features[0].mean() > micro_features[3].mean()


def test_micro_batches_give_the_same_features_as_single_clips(
    reference_clips: np.ndarray, micro_features: np.ndarray
) -> None:
    # Five clips run as graphs of 4 + 1; reversed order must give reversed rows: no state is
    # carried from one clip to the next.
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (1, RATE)).astype(np.float32)
    batch = np.concatenate([reference_clips[::-1], noise])
    out = MicroFrontend().extract(batch, FeatureConfig(warmup_ms=0), RATE)
    np.testing.assert_array_equal(out[:4], micro_features[::-1])
    single = MicroFrontend().extract(noise, FeatureConfig(warmup_ms=0), RATE)
    np.testing.assert_array_equal(out[4], single[0])


def test_micro_warmup_is_the_clips_quiet_piece_and_its_frames_are_dropped(
    reference_clips: np.ndarray,
) -> None:
    clip = reference_clips[:1]
    warm = MicroFrontend().extract(clip, FeatureConfig(warmup_ms=600), RATE)
    # By hand: the quietest 200 ms piece of the clip, three times, then the clip, afresh.
    pieces = clip[0].reshape(5, 3200)
    quiet = pieces[np.argmin(np.square(pieces.astype(np.float64)).mean(axis=1))]
    joined = np.concatenate([np.tile(quiet, 3), clip[0]])[np.newaxis]
    by_hand = MicroFrontend().extract(joined, FeatureConfig(warmup_ms=0), RATE)
    assert warm.shape == (1, 49, 40)
    np.testing.assert_array_equal(warm, by_hand[:, 30:])
    # Whole slices only: 610 ms warms up as 600 ms does.
    np.testing.assert_array_equal(
        MicroFrontend().extract(clip, FeatureConfig(warmup_ms=610), RATE), warm
    )


def test_micro_warmup_brings_clips_close_to_a_running_frontend(
    reference_clips: np.ndarray,
) -> None:
    # On the device the frontend has been running: 3 s of the room's noise came before the word.
    rng = np.random.default_rng(1)
    yes = reference_clips[0]
    room = (rng.standard_normal(3 * RATE) * 0.01).astype(np.float32)
    running = MicroFrontend().extract(
        np.concatenate([room, yes + room[:RATE]])[np.newaxis], FeatureConfig(warmup_ms=0), RATE
    )[0, -49:]
    heard = (yes + room[:RATE])[np.newaxis]
    fresh = MicroFrontend().extract(heard, FeatureConfig(warmup_ms=0), RATE)[0]
    warm = MicroFrontend().extract(heard, FeatureConfig(), RATE)[0]
    fresh_gap, warm_gap = np.abs(fresh - running).mean(), np.abs(warm - running).mean()
    assert warm_gap < fresh_gap / 2, (warm_gap, fresh_gap)


def test_micro_clips_full_scale_samples_instead_of_overflowing() -> None:
    loud = np.ones((1, RATE), np.float32)
    clipped = np.full((1, RATE), 32767 / 32768, np.float32)
    config = FeatureConfig()
    np.testing.assert_array_equal(
        MicroFrontend().extract(loud, config, RATE), MicroFrontend().extract(clipped, config, RATE)
    )


def test_quantize_for_device_equals_the_sketch_integer_arithmetic() -> None:
    # The sketch maps the frontend's uint16 value v to (v * 256 + 333) / 666 - 128, clamped;
    # that is scale 666 / (25.6 * 256) on features v * 10 / 256.
    v = np.arange(0, 2000)
    device = np.clip((v * 256 + 333) // 666 - 128, -128, 127)
    features = (v * (10 / 256)).astype(np.float32)
    ours = quantize_for_device(features, 666 / (25.6 * 256), -128)
    assert ours.dtype == np.int8
    np.testing.assert_array_equal(ours, device)
    # Halves round away from zero, also below zero.
    np.testing.assert_array_equal(quantize_for_device(np.array([-2.5, 2.5]), 1.0, 0), [-3, 3])


@pytest.mark.parametrize("extractor", EXTRACTORS, ids=EXTRACTOR_IDS)
def test_shapes_dtypes_and_determinism(extractor: FeatureExtractor) -> None:
    rng = np.random.default_rng(1)
    audio = rng.uniform(-0.5, 0.5, (3, RATE)).astype(np.float32)
    out = extractor.extract(audio, FeatureConfig(), RATE)
    assert out.shape == (3, 49, 40) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, extractor.extract(audio, FeatureConfig(), RATE))
    # A clip's features do not depend on the clips batched with it.
    np.testing.assert_allclose(
        extractor.extract(audio[1:2], FeatureConfig(), RATE)[0], out[1], rtol=1e-5, atol=1e-5
    )
    # Other window, stride and bins: frames = 1 + (16000 - 400) // 160 = 98.
    other = FeatureConfig(window_ms=25, stride_ms=10, bins=20)
    assert extractor.extract(audio[:1], other, RATE).shape == (1, 98, 20)
    # Clips that are not a whole number of strides long: 1 + (12345 - 480) // 320 = 38.
    assert extractor.extract(audio[:1, :12345], FeatureConfig(), RATE).shape == (1, 38, 40)
    # float64 input is accepted; no clips gives no features.
    assert (
        extractor.extract(audio[:1].astype(np.float64), FeatureConfig(), RATE).dtype == np.float32
    )
    assert extractor.extract(audio[:0], FeatureConfig(), RATE).shape == (0, 49, 40)


@pytest.mark.parametrize("extractor", EXTRACTORS, ids=EXTRACTOR_IDS)
def test_settings_change_with_every_config_field(extractor: FeatureExtractor) -> None:
    base = extractor.settings(FeatureConfig(), RATE)
    json.dumps(base)  # the cache key must be JSON-ready
    assert base == extractor.settings(FeatureConfig(), RATE)
    variants = [
        extractor.settings(FeatureConfig(window_ms=25), RATE),
        extractor.settings(FeatureConfig(stride_ms=10), RATE),
        extractor.settings(FeatureConfig(bins=32), RATE),
        extractor.settings(FeatureConfig(), 22050),
    ]
    if extractor.name == "micro":  # the only extractor with state to warm up
        variants.append(extractor.settings(FeatureConfig(warmup_ms=0), RATE))
    keys = [json.dumps(s, sort_keys=True) for s in [base, *variants]]
    assert len(set(keys)) == len(keys)


def test_spectrogram_band_pooling_and_tone_positions() -> None:
    import torch

    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)[None]
    # 257 FFT bins pooled into 40 bands of ~6.4 bins (31.25 Hz each): 1500 Hz is FFT bin 48,
    # in band 7 (FFT bins 45..50).
    pooled = LogSpectrogram().extract(tone, FeatureConfig(), RATE)
    assert set(pooled[0].argmax(axis=1).tolist()) == {7}
    # With one band per FFT bin the pooling is the identity: a plain log power spectrogram.
    full = LogSpectrogram().extract(tone, FeatureConfig(bins=257), RATE)[0]
    # Frame k is the Hann-windowed samples [320k, 320k + 480) zero-padded to 512.
    frames = torch.from_numpy(tone[0]).unfold(0, 480, 320) * torch.hann_window(480)
    spec = torch.fft.rfft(frames, n=512)
    expected = torch.log(spec.abs() ** 2 + 1e-6).numpy()
    np.testing.assert_allclose(full, expected, rtol=1e-4, atol=1e-4)
    # Higher tones land in higher mel bands.
    high = (0.5 * np.sin(2 * np.pi * 4000 * t)).astype(np.float32)[None]
    mel = LogMel().extract(np.concatenate([tone, high]), FeatureConfig(), RATE)
    assert mel[1].mean(axis=0).argmax() > mel[0].mean(axis=0).argmax()


def test_plugin_registers_the_four_extractors() -> None:
    manager = PluginManager()
    manager.register(kwscompress_features, name="features")
    components = manager.components("feature_extractor")
    assert sorted(components) == ["mel", "mfcc", "micro", "spectrogram"]
    for registered in components.values():
        assert isinstance(registered.component, FeatureExtractor)
        assert registered.component.description


def test_tensorflow_import_order_keeps_torch_alive() -> None:
    # TensorFlow imported before torch._dynamo makes the first optimizer segfault (exit -11);
    # import_tensorflow() imports in the safe order.
    code = (
        "from kwscompress.tf_import import import_tensorflow\n"
        "import_tensorflow()\n"
        "import torch\n"
        "torch.optim.Adam(torch.nn.Linear(2, 2).parameters())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("extractor", EXTRACTORS, ids=EXTRACTOR_IDS)
@pytest.mark.parametrize(
    ("audio", "rate", "config", "message"),
    [
        (np.zeros(RATE, np.float32), RATE, FeatureConfig(), "shape"),
        (np.zeros((1, 1, RATE), np.float32), RATE, FeatureConfig(), "shape"),
        (np.zeros((1, RATE), np.int16), RATE, FeatureConfig(), "dtype int16"),
        (np.zeros((1, 100), np.float32), RATE, FeatureConfig(), "at least one window"),
        (np.full((1, RATE), np.nan, np.float32), RATE, FeatureConfig(), "NaN or infinite"),
        (np.zeros((1, RATE), np.float32), 0, FeatureConfig(), "sample rate"),
        (np.zeros((1, RATE), np.float32), RATE, FeatureConfig(bins=0), "features.bins"),
        (np.zeros((1, RATE), np.float32), RATE, FeatureConfig(stride_ms=-1), "features.stride_ms"),
    ],
    ids=["1d", "3d", "int16", "short", "nan", "rate0", "bins0", "stride"],
)
def test_bad_input_names_the_problem(
    extractor: FeatureExtractor,
    audio: np.ndarray,
    rate: int,
    config: FeatureConfig,
    message: str,
) -> None:
    with pytest.raises(KwsError, match=message):
        extractor.extract(audio, config, rate)


def test_micro_rejects_what_the_frontend_cannot_compute() -> None:
    audio = np.zeros((1, 8000), np.float32)
    with pytest.raises(KwsError, match=r"sample rate above 15000 Hz.*got data\.sample_rate=8000"):
        MicroFrontend().extract(audio, FeatureConfig(), 8000)
    with pytest.raises(KwsError, match=r"features\.window_ms in whole milliseconds.*30\.5"):
        MicroFrontend().settings(FeatureConfig(window_ms=30.5), RATE)
    with pytest.raises(KwsError, match="scale must be positive"):
        quantize_for_device(np.zeros(3), 0.0, -128)


def test_spectrogram_rejects_more_bands_than_fft_bins() -> None:
    with pytest.raises(KwsError, match=r"features\.bins=300 exceeds the 257 FFT bins"):
        LogSpectrogram().settings(FeatureConfig(bins=300), RATE)
