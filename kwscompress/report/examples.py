"""Example clips for the preprocessing figures: the loudest and quietest clip of a word, and
every view of it, from the waveform to the features the model sees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.config import FeatureConfig
from kwscompress.data.audio import UnusableAudio, read_clip

MAX_SCANNED = 400
"""Clips read per word when looking for the loud and quiet examples (spread over the folder)."""


@dataclass
class Example:
    """One clip chosen as an example."""

    kind: str
    """``loud`` or ``quiet``."""
    path: Path
    audio: np.ndarray
    rms_dbfs: float


@dataclass
class Views:
    """Every representation of one clip; 2-D arrays are ``[bins, frames]``."""

    spectrum_hz: np.ndarray
    spectrum_db: np.ndarray
    spectrogram_db: np.ndarray
    mel_db: np.ndarray
    mfcc: np.ndarray
    micro: np.ndarray | None
    """The micro frontend features as the model sees them, or None when unavailable."""


def rms_dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * np.log10(max(rms, 1e-10))


def pick_examples(folder: Path, sample_rate: int) -> tuple[list[Example], int]:
    """The loudest and the quietest clip (by RMS) of a word folder, and how many were scanned.

    Folders with more than :data:`MAX_SCANNED` clips are sampled evenly in name order, so the
    choice is the same every time. Unreadable files are passed over (the dataset stage reports
    them). Returns an empty list when the folder holds no usable clip.
    """
    files = sorted(folder.glob("*.wav"))
    if len(files) > MAX_SCANNED:
        picks = np.linspace(0, len(files) - 1, MAX_SCANNED).round().astype(int)
        files = [files[i] for i in picks]
    clips = []
    for path in files:
        try:
            audio = read_clip(path, sample_rate, sample_rate).audio
        except UnusableAudio:
            continue
        level = rms_dbfs(audio)
        if np.isfinite(level) and level > -100:
            clips.append((level, path, audio))
    if not clips:
        return [], len(files)
    clips.sort(key=lambda item: item[0])
    chosen = [("loud", clips[-1])] + ([("quiet", clips[0])] if len(clips) > 1 else [])
    return [Example(kind, path, audio, level) for kind, (level, path, audio) in chosen], len(files)


def compute_views(
    audio: np.ndarray,
    config: FeatureConfig,
    sample_rate: int,
    micro_extractor: Any | None,
) -> Views:
    """Compute every view of a clip with the feature config's window and stride.

    The spectrogram, mel spectrogram and MFCC use torchaudio with the same framing as the
    model's features, so every picture has the frames the model has.
    """
    import torch
    import torchaudio.transforms as T

    window = round(sample_rate * config.window_ms / 1000)
    hop = round(sample_rate * config.stride_ms / 1000)
    n_fft = 1 << (window - 1).bit_length()
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
    to_db = T.AmplitudeToDB(stype="power", top_db=None)
    spectrogram = T.Spectrogram(n_fft=n_fft, win_length=window, hop_length=hop, power=2.0)
    mel_kwargs = {"n_fft": n_fft, "win_length": window, "hop_length": hop, "n_mels": config.bins}
    mel = T.MelSpectrogram(sample_rate=sample_rate, **mel_kwargs)
    mfcc = T.MFCC(sample_rate=sample_rate, n_mfcc=min(13, config.bins), melkwargs=mel_kwargs)
    with torch.no_grad():
        spec_db = to_db(spectrogram(signal))[0].numpy()
        mel_db = to_db(mel(signal))[0].numpy()
        coefficients = mfcc(signal)[0].numpy()

    # Amplitude spectrum of the whole clip, scaled so a full-scale sine peaks at 0 dB.
    magnitude = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) * 4 / len(audio)
    micro = None
    if micro_extractor is not None:
        micro = np.asarray(micro_extractor.extract(audio[None], config, sample_rate))[0].T
    return Views(
        spectrum_hz=np.fft.rfftfreq(len(audio), 1 / sample_rate),
        spectrum_db=20 * np.log10(np.maximum(magnitude, 1e-7)),
        spectrogram_db=spec_db,
        mel_db=mel_db,
        mfcc=coefficients,
        micro=micro,
    )
