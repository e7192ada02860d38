"""Reading WAV clips into the one format the features expect: float32 mono at the model's rate.

Real datasets hold surprises: stereo files, 8-bit or float samples, other sample rates, empty or
truncated files. What can be converted soundly is converted (and the conversion reported); what
cannot raises :class:`UnusableAudio`, which the dataset reader turns into a skipped-file entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
"""Sample rates a file may declare; anything outside is a damaged header, not audio."""


class UnusableAudio(Exception):
    """A file that cannot be used as a clip; the message says why."""


@dataclass
class LoadedClip:
    """A clip as float32 mono samples in [-1, 1], with the conversions applied to it."""

    audio: np.ndarray
    conversions: list[str] = field(default_factory=list)


def read_clip(path: Path, sample_rate: int, num_samples: int | None = None) -> LoadedClip:
    """Read ``path`` as mono float32 at ``sample_rate``; pad or cut to ``num_samples`` if given.

    Cutting or padding is reported among the conversions, like resampling.

    :raises UnusableAudio: the file is unreadable, empty, truncated or holds non-finite samples.
    """
    try:
        info = soundfile.info(str(path))
        shortfall = wav_shortfall(Path(path))
        audio, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports damage through several exception types
        raise UnusableAudio(f"unreadable: {exc}") from None
    if shortfall is not None:
        declared, present = shortfall
        raise UnusableAudio(
            f"truncated: the header declares {declared} bytes of samples, the file holds {present}"
        )
    if audio.shape[0] == 0:
        raise UnusableAudio("empty: no samples")
    if not MIN_SAMPLE_RATE <= file_rate <= MAX_SAMPLE_RATE:
        raise UnusableAudio(
            f"sample rate {file_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
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
    if num_samples is not None and len(mono) != num_samples:
        action = "cut" if len(mono) > num_samples else "zero-padded"
        conversions.append(f"{action} from {len(mono)} to {num_samples} samples")
        mono = fit_length(mono, num_samples)
    return LoadedClip(np.clip(mono, -1.0, 1.0).astype(np.float32), conversions)


def wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of a RIFF/WAVE file's sample data when it is cut short.

    libsndfile quietly shrinks a truncated file's frame count to the samples present, so a
    half-written clip would pass as a short one; the ``data`` chunk's declared size tells.
    None for a complete file, a non-WAV file, or a size left open by a streaming writer.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length in (0, 0xFFFFFFFF):
                    return None
                present = size - position - 8
                return (length, present) if present < length else None
            position += 8 + length + (length & 1)
    return None


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Zero-pad at the end or cut ``audio`` to exactly ``num_samples`` (Speech Commands' rule)."""
    if len(audio) >= num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - len(audio)))
