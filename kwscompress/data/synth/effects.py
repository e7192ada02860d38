"""Recording effects that turn a clean synthetic word into something like a real recording.

Every function takes float audio in [-1, 1] and, where it draws anything, a numpy ``Generator``,
so a clip's effects are fixed by its seed alone.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000


def trim(x: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples below ``threshold`` times the peak."""
    if x.size == 0:
        return x
    loud = np.flatnonzero(np.abs(x) > threshold * np.abs(x).max())
    if loud.size == 0:
        return x[:0]
    return x[loud[0] : loud[-1] + 1]


def resample(x: np.ndarray, source_rate: int, speed: float) -> np.ndarray:
    """Play ``x`` ``speed`` times faster and resample to 16 kHz (pitch and formants move too)."""
    ratio = Fraction(SAMPLE_RATE / (source_rate * speed)).limit_denominator(1000)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def microphone(x: np.ndarray, highpass_hz: float, lowpass_hz: float, order: int) -> np.ndarray:
    """A microphone and its preamp: a band-pass of the given order."""
    sos = signal.butter(
        order,
        [highpass_hz, min(lowpass_hz, 0.95 * SAMPLE_RATE / 2)],
        btype="bandpass",
        fs=SAMPLE_RATE,
        output="sos",
    )
    return signal.sosfilt(sos, x).astype(np.float32)


def equalize(x: np.ndarray, rng: np.random.Generator, bands: int = 2) -> np.ndarray:
    """Boost or cut a few random bands (a coloured microphone, a hand over the phone)."""
    y = x.astype(np.float64)
    for _ in range(bands):
        centre = float(np.exp(rng.uniform(np.log(200.0), np.log(5000.0))))
        width = rng.uniform(0.3, 1.0)
        low, high = centre * 2 ** (-width), min(centre * 2**width, 7600.0)
        sos = signal.butter(2, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        y = y + rng.uniform(-0.7, 1.5) * signal.sosfilt(sos, y)
    return y.astype(np.float32)


def reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: direct sound, sparse early echoes, a decaying tail."""
    rt60 = rng.uniform(0.1, 0.6)
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    # Walls absorb highs faster than lows: smooth the tail a little.
    tail = signal.sosfilt(
        signal.butter(1, rng.uniform(2000, 7000), fs=SAMPLE_RATE, output="sos"), tail
    )
    ir = tail * 10 ** (rng.uniform(-26.0, -12.0) / 20)
    ir[0] = 1.0
    for _ in range(int(rng.integers(2, 7))):
        ir[int(rng.uniform(0.002, 0.03) * SAMPLE_RATE)] += rng.uniform(-0.5, 0.5)
    wet = signal.fftconvolve(x, ir)[: x.size + length // 3]
    return (wet / max(np.abs(wet).max(), 1e-9) * np.abs(x).max()).astype(np.float32)


def place(x: np.ndarray, rng: np.random.Generator, length: int = SAMPLE_RATE) -> np.ndarray:
    """Put the word at a random place in a clip of ``length`` samples (cutting a long word)."""
    margin = int(0.02 * SAMPLE_RATE)
    if x.size > length - 2 * margin:
        fade = int(0.02 * SAMPLE_RATE)
        x = x[: length - 2 * margin].copy()
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    clip = np.zeros(length, dtype=np.float32)
    # Real recordings tend to have the word in the middle; mix centred and anywhere.
    free = length - x.size - 2 * margin
    centre = free / 2
    start = rng.normal(centre, free / 4) if rng.random() < 0.6 else rng.uniform(0, free)
    start = margin + int(np.clip(start, 0, free))
    clip[start : start + x.size] = x
    return clip


def set_peak(x: np.ndarray, peak_db: float) -> np.ndarray:
    """Scale to a peak level in dBFS; above 0 dBFS the recording clips, as a real one would."""
    peak = np.abs(x).max()
    if peak == 0:
        return x
    return np.clip(x * (10 ** (peak_db / 20) / peak), -1.0, 1.0)


def active_rms(x: np.ndarray) -> float:
    """RMS over the loud part (20 ms frames within 30 dB of the loudest)."""
    frames = x[: x.size // 320 * 320].reshape(-1, 320)
    power = (frames.astype(np.float64) ** 2).mean(axis=1)
    loud = power[power > power.max() * 1e-3]
    return float(np.sqrt(loud.mean())) if loud.size else 0.0


def to_int16(x: np.ndarray) -> np.ndarray:
    """Quantize to 16-bit PCM."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
