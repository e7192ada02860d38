"""``spectrogram``, ``mel`` and ``mfcc``: classic log-spectral features through torchaudio.

They frame like ``micro`` (window ``window_ms``, hop ``stride_ms``, no centre padding, so the
same frame count) and use the same FFT size the micro frontend does: the window length rounded up
to a power of two (512 for 30 ms at 16 kHz), Hann window, zero-padded; frame ``k`` covers samples
``[k * stride, k * stride + window)`` as in the micro frontend. Logs are natural logs of power
plus :data:`LOG_FLOOR`. None of them runs on the device as is; they are there to compare
what a model learns from other inputs.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
import torch

from kwscompress.config import FeatureConfig
from kwscompress.errors import KwsError
from kwscompress_features.common import check_audio, check_config, window_and_stride

LOG_FLOOR = 1e-6
"""Added to the power before the log, so silence gives log(1e-6) instead of minus infinity
(torchaudio's ``MFCC(log_mels=True)`` uses the same value)."""

LOWER_HZ = 125.0
"""Lowest mel band edge, the micro frontend's, so mel features hear the band micro hears."""

UPPER_HZ = 7500.0
"""Highest mel band edge (the micro frontend's), lowered to Nyquist at low sample rates."""

MIN_MELS = 40
"""Mel bands under the MFCC's cepstrum: ``max(MIN_MELS, bins)`` (a DCT cannot add bands)."""

CHUNK = 256
"""Clips per torchaudio call, to bound the memory of the intermediate spectra."""


class _TorchaudioExtractor:
    """Framing, checks and batching shared by the torchaudio extractors."""

    name = ""
    description = ""

    def settings(self, config: FeatureConfig, sample_rate: int) -> dict[str, Any]:
        """Every parameter that changes the output (the feature cache key).

        :raises KwsError: settings that give no usable frame or too many bins.
        """
        check_config(config, sample_rate, self.name)
        window, stride = window_and_stride(config, sample_rate, self.name)
        n_fft = 1 << (window - 1).bit_length()
        settings = {
            "sample_rate": int(sample_rate),
            "window_samples": window,
            "stride_samples": stride,
            "n_fft": n_fft,
            "window_fn": "hann",
            "bins": int(config.bins),
            "log_floor": LOG_FLOOR,
        }
        settings.update(self._own_settings(config, sample_rate, n_fft))
        return settings

    def extract(self, audio: np.ndarray, config: FeatureConfig, sample_rate: int) -> np.ndarray:
        """Features ``[clips, frames, bins]`` (float32) of float clips ``[clips, samples]``.

        :raises KwsError: wrong shape or dtype, clips shorter than a window, or bad settings.
        """
        settings = self.settings(config, sample_rate)
        audio = check_audio(audio, self.name, settings["window_samples"])
        transform = _transform(self.name, tuple(sorted(settings.items())))
        parts = []
        with torch.inference_mode():
            for start in range(0, len(audio), CHUNK):
                chunk = torch.tensor(audio[start : start + CHUNK])
                parts.append(transform(chunk).transpose(1, 2).numpy())
        if not parts:  # torch's FFT rejects an empty batch; take the shape from one clip
            return self.extract(np.zeros((1, audio.shape[1]), np.float32), config, sample_rate)[:0]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _own_settings(self, config: FeatureConfig, sample_rate: int, n_fft: int) -> dict[str, Any]:
        """The settings specific to one extractor (each subclass defines them)."""
        raise NotImplementedError


class LogSpectrogram(_TorchaudioExtractor):
    """Log power spectrogram, the FFT bins averaged into ``bins`` equal-width linear bands.

    The ``n_fft // 2 + 1`` bins from 0 Hz to Nyquist are split into ``bins`` contiguous groups of
    (nearly) equal size and each group's power is averaged, so ``bins = n_fft // 2 + 1`` (257 at
    16 kHz) is the plain spectrogram and ``bins = 40`` is a 40-band linear filterbank.
    """

    name = "spectrogram"
    description = "log power spectrogram pooled into equal-width linear bands (torchaudio)"

    def _own_settings(self, config: FeatureConfig, sample_rate: int, n_fft: int) -> dict[str, Any]:
        fft_bins = n_fft // 2 + 1
        if config.bins > fft_bins:
            raise KwsError(
                f"spectrogram features: features.bins={config.bins} exceeds the {fft_bins} FFT "
                f"bins of a {n_fft}-point FFT; use at most {fft_bins}"
            )
        return {"pooling": "mean power over equal-width linear bands", "power": 2.0}


class LogMel(_TorchaudioExtractor):
    """Log mel spectrogram: ``bins`` HTK mel bands from 125 Hz to min(7500 Hz, Nyquist)."""

    name = "mel"
    description = "log mel spectrogram, 125-7500 Hz (torchaudio)"

    def _own_settings(self, config: FeatureConfig, sample_rate: int, n_fft: int) -> dict[str, Any]:
        return _mel_settings(config.bins, sample_rate)


class Mfcc(_TorchaudioExtractor):
    """MFCC: the first ``bins`` DCT-II (orthonormal) coefficients of the log mel spectrogram."""

    name = "mfcc"
    description = "mel-frequency cepstral coefficients over 125-7500 Hz (torchaudio)"

    def _own_settings(self, config: FeatureConfig, sample_rate: int, n_fft: int) -> dict[str, Any]:
        return {**_mel_settings(max(MIN_MELS, config.bins), sample_rate), "dct": "type 2, ortho"}


def _mel_settings(n_mels: int, sample_rate: int) -> dict[str, Any]:
    return {
        "n_mels": int(n_mels),
        "f_min": LOWER_HZ,
        "f_max": min(UPPER_HZ, sample_rate / 2),
        "mel_scale": "htk",
        "power": 2.0,
    }


@functools.lru_cache(maxsize=16)
def _transform(name: str, frozen_settings: tuple[tuple[str, Any], ...]) -> torch.nn.Module:
    """The torchaudio pipeline of extractor ``name``: ``[N, samples]`` -> ``[N, bins, frames]``."""
    import torchaudio.transforms as T

    s = dict(frozen_settings)
    framing = {
        "n_fft": s["n_fft"],
        "win_length": s["window_samples"],
        "hop_length": s["stride_samples"],
        "center": False,
    }
    align = _AlignFrames(s["window_samples"], s["n_fft"])
    if name == "spectrogram":
        return torch.nn.Sequential(
            align,
            T.Spectrogram(power=s["power"], **framing),
            _BandMean(s["n_fft"] // 2 + 1, s["bins"]),
            _Log(),
        )
    mel = {
        "n_mels": s["n_mels"],
        "f_min": s["f_min"],
        "f_max": s["f_max"],
        "mel_scale": s["mel_scale"],
        "power": s["power"],
        **framing,
    }
    if name == "mel":
        return torch.nn.Sequential(align, T.MelSpectrogram(s["sample_rate"], **mel), _Log())
    # log_mels=True: the default dB conversion clamps to the loudest value of the whole batch,
    # which would make a clip's features depend on the clips batched with it.
    mfcc = T.MFCC(s["sample_rate"], n_mfcc=s["bins"], log_mels=True, melkwargs=mel)
    return torch.nn.Sequential(align, mfcc)


class _AlignFrames(torch.nn.Module):
    """Pad clips so that torch's frames are the micro frontend's.

    ``torch.stft`` frames ``n_fft`` samples and centres the shorter window in them; padding the
    clip by the same margins puts frame ``k``'s window at ``[k * stride, k * stride + window)``
    and gives ``1 + (samples - window) // stride`` frames instead of ``1 + (samples - n_fft) //
    stride``.
    """

    def __init__(self, window: int, n_fft: int):
        super().__init__()
        self.left = (n_fft - window) // 2
        self.right = n_fft - window - self.left

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(audio, (self.left, self.right))


class _BandMean(torch.nn.Module):
    """Average ``[N, fft_bins, frames]`` power over contiguous, nearly equal groups of bins."""

    def __init__(self, fft_bins: int, bands: int):
        super().__init__()
        edges = np.linspace(0, fft_bins, bands + 1).round().astype(int)
        weights = torch.zeros(bands, fft_bins)
        for band, (lo, hi) in enumerate(itertools.pairwise(edges)):
            weights[band, lo:hi] = 1.0 / (hi - lo)
        self.register_buffer("weights", weights)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bf,nft->nbt", self.weights, power)


class _Log(torch.nn.Module):
    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.log(power + LOG_FLOOR)
