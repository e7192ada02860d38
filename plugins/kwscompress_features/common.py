"""Input checks and frame geometry shared by every extractor.

All extractors frame the same way: a window of ``window_ms`` moved by ``stride_ms``, no padding
at either end, so a clip of ``samples`` samples gives ``1 + (samples - window) // stride`` frames
(49 for 1 s at 16 kHz, 30 ms, 20 ms: TFLM's ``spectrogram_length``).
"""

from __future__ import annotations

import numpy as np

from kwscompress.config import FeatureConfig
from kwscompress.errors import KwsError


def check_audio(audio: np.ndarray, extractor: str, min_samples: int) -> np.ndarray:
    """Return ``audio`` as a float32 ``[clips, samples]`` array, or raise naming what is wrong.

    :param audio: the clips handed to ``extract``.
    :param extractor: the extractor's name, for the message.
    :param min_samples: the shortest clip that yields one frame (one window).
    :raises KwsError: not a 2-D floating-point array, clips shorter than one window, or
        non-finite samples.
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise KwsError(
            f"feature extractor {extractor!r} expects audio of shape [clips, samples], "
            f"got an array of shape {audio.shape}"
        )
    if not np.issubdtype(audio.dtype, np.floating):
        raise KwsError(
            f"feature extractor {extractor!r} expects floating-point samples in [-1, 1], "
            f"got dtype {audio.dtype}"
        )
    if audio.shape[1] < min_samples:
        raise KwsError(
            f"feature extractor {extractor!r} needs clips of at least one window "
            f"({min_samples} samples), got {audio.shape[1]} samples"
        )
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise KwsError(
            f"feature extractor {extractor!r} got NaN or infinite samples; "
            "clips must hold values in [-1, 1]"
        )
    return audio


def check_config(config: FeatureConfig, sample_rate: int, extractor: str) -> None:
    """Raise :class:`KwsError` naming the key when a setting cannot give any frame.

    :raises KwsError: a non-positive window, stride, bin count or sample rate.
    """
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise KwsError(
            f"feature extractor {extractor!r} needs a positive integer sample rate, "
            f"got {sample_rate!r}"
        )
    for key in ("window_ms", "stride_ms", "bins"):
        if getattr(config, key) <= 0:
            raise KwsError(f"features.{key} must be positive, got {getattr(config, key)!r}")


def window_and_stride(config: FeatureConfig, sample_rate: int, extractor: str) -> tuple[int, int]:
    """``(window, stride)`` in samples, rounded to whole samples.

    :raises KwsError: the window or stride is shorter than two samples or one sample.
    """
    window = round(sample_rate * config.window_ms / 1000)
    stride = round(sample_rate * config.stride_ms / 1000)
    if window < 2 or stride < 1:
        raise KwsError(
            f"feature extractor {extractor!r}: features.window_ms={config.window_ms} and "
            f"features.stride_ms={config.stride_ms} at {sample_rate} Hz give a window of "
            f"{window} and a stride of {stride} samples; the window needs at least 2 samples"
        )
    return window, stride


def num_frames(samples: int, window: int, stride: int) -> int:
    """Frames in a clip of ``samples`` samples (whole windows only, no padding)."""
    return 1 + (samples - window) // stride
