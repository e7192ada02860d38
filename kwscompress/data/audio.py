"""Reading WAV clips into the one format the features expect: float32 mono at the model's rate.

Real datasets hold surprises: stereo files, 8-bit or float samples, other sample rates, empty or
truncated files. What can be converted soundly is converted (and the conversion reported); what
cannot raises :class:`UnusableAudio`, which the dataset reader turns into a skipped-file entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly


class UnusableAudio(Exception):
    """A file that cannot be used as a clip; the message says why."""


@dataclass
class LoadedClip:
    """A clip as float32 mono samples in [-1, 1], with the conversions applied to it."""

    audio: np.ndarray
    conversions: list[str] = field(default_factory=list)


def read_clip(path: Path, sample_rate: int, num_samples: int | None = None) -> LoadedClip:
    """Read ``path`` as mono float32 at ``sample_rate``; pad or cut to ``num_samples`` if given.

    :raises UnusableAudio: the file is unreadable, empty, truncated or holds non-finite samples.
    """
    try:
        info = soundfile.info(str(path))
        audio, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise UnusableAudio(f"unreadable: {exc}") from None
    if audio.shape[0] == 0:
        raise UnusableAudio("empty: no samples")
    if info.frames and audio.shape[0] < info.frames:
        raise UnusableAudio(f"truncated: header says {info.frames} samples, file has {len(audio)}")
    if not np.isfinite(audio).all():
        raise UnusableAudio("holds NaN or infinite samples")
    conversions = []
    if info.subtype not in ("PCM_16",):
        conversions.append(f"{info.subtype} samples converted to float")
        peak = float(np.abs(audio).max())
        if peak > 1.0:
            raise UnusableAudio(f"float samples reach {peak:.3g}, outside [-1, 1]")
    if audio.shape[1] > 1:
        conversions.append(f"{audio.shape[1]} channels mixed to mono")
    mono = audio.mean(axis=1)
    if file_rate != sample_rate:
        conversions.append(f"resampled from {file_rate} Hz to {sample_rate} Hz")
        common = gcd(int(file_rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // common, file_rate // common).astype(np.float32)
    if num_samples is not None:
        mono = fit_length(mono, num_samples)
    return LoadedClip(np.clip(mono, -1.0, 1.0).astype(np.float32), conversions)


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Zero-pad at the end or cut ``audio`` to exactly ``num_samples`` (Speech Commands' rule)."""
    if len(audio) >= num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - len(audio)))
