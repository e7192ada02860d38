"""``micro``: the TFLM micro frontend, the features the device computes.

The numbers come from TensorFlow's ``audio_microfrontend`` op, which wraps the same C library the
Arduino sketch runs (Hann window, 16-bit fixed-point FFT, mel filterbank, noise reduction, PCAN
gain control, log scale). The settings are the device's (:data:`DEVICE_FRONTEND`); the audio is
converted to int16 and the output scaled by 10/256 exactly as TensorFlow's ``speech_commands``
training code does, so a model trained on these features takes the device's input after
:func:`quantize_for_device`.

The frontend has state (a per-channel noise estimate and PCAN gain control) that starts at zero
each time the op is called. On the device it never restarts, so a word arrives at a settled
frontend; a clip computed afresh looks very different in its first frames (on the demo's test
stream the mean absolute difference to the device's features was 4.6, as large as the mean
feature). With ``features.warmup_ms`` the frontend first hears the clip's own quietest 200 ms
repeated for that long, and those frames are dropped: the difference falls to 1.8 at 1 s and
1.5 at 2 s (docs/rejection.rst).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from kwscompress.config import FeatureConfig
from kwscompress.errors import KwsError
from kwscompress_features.common import check_audio, check_config, num_frames

DEVICE_FRONTEND: dict[str, Any] = {
    "lower_band_limit": 125.0,
    "upper_band_limit": 7500.0,
    "smoothing_bits": 10,
    "even_smoothing": 0.025,
    "odd_smoothing": 0.06,
    "min_signal_remaining": 0.05,
    "enable_pcan": True,
    "pcan_strength": 0.95,
    "pcan_offset": 80.0,
    "gain_bits": 21,
    "enable_log": True,
    "scale_shift": 6,
}
"""Frontend settings of the Arduino ``micro_speech`` sketch (``InitializeMicroFeatures``) other
than window, stride and channel count. They equal the op's defaults; they are passed explicitly
so that a change of default in TensorFlow cannot silently change the features."""

OUTPUT_SCALE = 10.0 / 256.0
"""Training scale of the frontend output (TF ``input_data.py``): about 0..670 becomes 0..26."""

INT16_SCALE = 32768.0
"""Float samples in [-1, 1] times this, clipped to the int16 range, are the device's samples."""

WARMUP_PIECE_MS = 200
"""Length of the quiet piece the warm-up repeats: ten 20 ms slices."""

GRAPH_BATCHES = (64, 16, 4, 1)
"""Clip counts of the compiled graphs; a batch is split greedily into these sizes. The op takes
one clip per call (its noise and gain state starts afresh each call), so each graph holds one
op per clip and TensorFlow runs them on all its threads; 64 measured fastest here."""


class MicroFrontend:
    """The TFLM micro frontend (the device's features), through TensorFlow's op."""

    name = "micro"
    description = "TFLM micro frontend as on the device (filterbank, noise reduction, PCAN, log)"

    def settings(self, config: FeatureConfig, sample_rate: int) -> dict[str, Any]:
        """Every setting of the frontend and of the scaling around it.

        Keys: ``sample_rate``, ``window_ms``, ``stride_ms``, ``channels`` (= ``config.bins``),
        every entry of :data:`DEVICE_FRONTEND`, ``int16_scale`` (32768, samples are clipped to
        the int16 range), ``output_scale`` (10/256) and ``warmup_ms`` (whole slices of it).

        :raises KwsError: a setting the frontend cannot use (see :meth:`extract`).
        """
        _check(config, sample_rate)
        return {
            "sample_rate": int(sample_rate),
            "window_ms": int(config.window_ms),
            "stride_ms": int(config.stride_ms),
            "channels": int(config.bins),
            **DEVICE_FRONTEND,
            "int16_scale": INT16_SCALE,
            "output_scale": OUTPUT_SCALE,
            "warmup_ms": int(config.warmup_ms) // int(config.stride_ms) * int(config.stride_ms),
        }

    def extract(self, audio: np.ndarray, config: FeatureConfig, sample_rate: int) -> np.ndarray:
        """Frontend features ``[clips, frames, bins]`` (float32, about 0..26) of float clips.

        :param audio: float clips ``[clips, samples]`` in [-1, 1] (values beyond are clipped).
        :param config: window and stride (whole milliseconds) and ``bins`` (channels).
        :param sample_rate: in Hz; above 15 kHz so the 7.5 kHz band edge is below Nyquist.
        :raises KwsError: wrong shape or dtype, clips shorter than a window, or settings the
            frontend cannot use.
        """
        settings = self.settings(config, sample_rate)
        window = sample_rate * settings["window_ms"] // 1000
        stride = sample_rate * settings["stride_ms"] // 1000
        audio = check_audio(audio, self.name, window)
        warmup_frames = settings["warmup_ms"] // settings["stride_ms"]
        if warmup_frames:
            piece = stride * max(1, round(WARMUP_PIECE_MS / settings["stride_ms"]))
            audio = np.concatenate([quiet_preroll(audio, warmup_frames * stride, piece), audio], 1)
        samples = audio.shape[1]
        frames = num_frames(samples, window, stride)
        # Truncation toward zero, as TensorFlow's cast; +1.0 would overflow int16 without clip.
        pcm = np.clip(audio * INT16_SCALE, -32768, 32767).astype(np.int16)
        out = np.empty((len(pcm), frames, config.bins), np.float32)
        frozen = tuple(sorted(settings.items()))
        start = 0
        for size in GRAPH_BATCHES:
            while len(pcm) - start >= size:
                graph = _frontend_graph(size, samples, frozen)
                out[start : start + size] = graph(pcm[start : start + size]).numpy()
                start += size
        # Slice k of the clip starts at sample (warmup_frames + k) * stride of the joined audio.
        return out[:, warmup_frames:]


def quiet_preroll(audio: np.ndarray, samples: int, piece: int) -> np.ndarray:
    """Each clip's quietest ``piece`` samples (by mean square), tiled to ``samples``.

    The clips ``[clips, samples]`` are cut into consecutive pieces from their start; a clip
    shorter than one piece is tiled whole.
    """
    piece = min(piece, audio.shape[1])
    count = audio.shape[1] // piece
    pieces = audio[:, : count * piece].reshape(len(audio), count, piece)
    energy = np.square(pieces, dtype=np.float64).mean(axis=2)
    quiet = pieces[np.arange(len(audio)), energy.argmin(axis=1)]
    return np.tile(quiet, (1, -(-samples // piece)))[:, :samples]


def quantize_for_device(features: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Map float features to the int8 input of a quantized model, as the device does.

    ``q = clamp(round(features / scale) + zero_point, -128, 127)`` with halves rounded away from
    zero, TFLite's rounding. Take ``scale`` and ``zero_point`` from the model's input tensor
    (TFLM's micro_speech model: 0.1017157 and -128, about 26/256). With ``scale = 666 / 6553.6``
    and ``zero_point = -128`` it reproduces exactly the integer mapping that TFLM's Arduino sketch
    hard-codes on the frontend's raw value ``v``: ``(v * 256 + 333) / 666 - 128``.

    :param features: float features of any shape.
    :param scale: the input tensor's quantization scale (positive).
    :param zero_point: the input tensor's zero point.
    :raises KwsError: a scale that is not positive.
    """
    if not scale > 0:
        raise KwsError(f"the input quantization scale must be positive, got {scale!r}")
    scaled = np.asarray(features, np.float64) / scale
    rounded = np.trunc(scaled + np.copysign(0.5, scaled))
    return np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def _check(config: FeatureConfig, sample_rate: int) -> None:
    check_config(config, sample_rate, MicroFrontend.name)
    for key in ("window_ms", "stride_ms"):
        value = getattr(config, key)
        if value != int(value):
            raise KwsError(
                f"micro features need features.{key} in whole milliseconds (the frontend "
                f"takes integers), got {value!r}"
            )
    upper = DEVICE_FRONTEND["upper_band_limit"]
    if sample_rate <= 2 * upper:
        raise KwsError(
            f"micro features need a sample rate above {2 * upper:.0f} Hz (the filterbank ends "
            f"at {upper:.0f} Hz; the device uses 16000 Hz), got data.sample_rate={sample_rate}"
        )


@functools.lru_cache(maxsize=32)
def _frontend_graph(
    batch: int, samples: int, frozen_settings: tuple[tuple[str, Any], ...]
) -> Callable[[np.ndarray], Any]:
    """A compiled TensorFlow function: int16 ``[batch, samples]`` -> scaled features."""
    from kwscompress.tf_import import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op

    settings = dict(frozen_settings)
    options = {key: settings[key] for key in DEVICE_FRONTEND}

    @tf.function(input_signature=[tf.TensorSpec([batch, samples], tf.int16)])
    def frontend(pcm: Any) -> Any:
        per_clip = [
            audio_microfrontend_op.audio_microfrontend(
                pcm[i],
                sample_rate=settings["sample_rate"],
                window_size=settings["window_ms"],
                window_step=settings["stride_ms"],
                num_channels=settings["channels"],
                out_scale=1,
                out_type=tf.float32,
                **options,
            )
            for i in range(batch)
        ]
        return tf.stack(per_clip) * settings["output_scale"]

    return frontend
