"""Noise: the floor of each recording and the ``_background_noise_`` files.

Real Speech Commands clips carry their room and microphone: a low-frequency-heavy floor, mains
hum, fans, other people. The background files are what the reader cuts ``_silence_`` clips from
(at volume U(0, 1)) and mixes into training clips, so they span real silence too: from loud
rumble down to a near-digital room tone of a few LSB.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from kwscompress.data.synth.effects import SAMPLE_RATE, reverberate

BACKGROUND_KINDS = ("brown", "room", "pink", "hum", "babble", "white")
"""Kinds of background recording, in the order files are made (then again, with new seeds)."""


def colored(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power falling as ``1 / f**exponent`` (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, 20.0) ** (-exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return (x / x.std()).astype(np.float32)


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS mains hum: 50 or 60 Hz with decaying, slightly drifting harmonics."""
    t = np.arange(n) / SAMPLE_RATE
    base = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    x = np.zeros(n)
    for k in range(1, 8):
        x += rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
    return (x / x.std()).astype(np.float32)


def recording_floor(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise floor of one recording: a random mix of colours, sometimes with hum."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    # Weights of white, pink and brown power, one FFT for all three.
    weights = rng.dirichlet([1.0, 1.0, 1.5])
    power = weights[0] + weights[1] * (1000 / freqs) + weights[2] * (1000 / freqs) ** 2
    x = np.fft.irfft(spectrum * np.sqrt(power), n)
    x = x / x.std()
    if rng.random() < 0.2:
        x = x + rng.uniform(0.2, 1.0) * hum(rng, n)
    return (x / x.std()).astype(np.float32)


def _slow_gain(rng: np.random.Generator, n: int, spread_db: float) -> np.ndarray:
    # A level that wanders over seconds, so one file covers a range of loudness.
    knots = rng.normal(0.0, spread_db, n // SAMPLE_RATE + 2)
    db = np.interp(np.arange(n) / SAMPLE_RATE, np.arange(knots.size), knots)
    return (10 ** (db / 20)).astype(np.float32)


def background(
    kind: str, rng: np.random.Generator, n: int, speech: Callable[[int], np.ndarray] | None = None
) -> np.ndarray:
    """One background recording of ``n`` samples; ``babble`` needs ``speech(n)`` (voices)."""
    if kind == "white":
        x = colored(rng, n, 0.0) * 10 ** (-34 / 20)
    elif kind == "pink":
        x = colored(rng, n, 1.0) * 10 ** (-28 / 20)
    elif kind == "brown":
        # Rumble with a small offset, like a cheap microphone's wind and handling noise.
        x = colored(rng, n, 2.0) * 10 ** (-22 / 20) + rng.uniform(-0.003, 0.003)
    elif kind == "hum":
        x = hum(rng, n) * 10 ** (-32 / 20) + colored(rng, n, 1.0) * 10 ** (-50 / 20)
    elif kind == "room":
        # Near silence: the converter's own hiss, a few LSB and almost all above 5 kHz, over a
        # fainter room (a real "silent" Speech Commands clip: about -84 dBFS, same shape).
        hiss = signal.sosfilt(
            signal.butter(4, 5500, btype="highpass", fs=SAMPLE_RATE, output="sos"),
            rng.standard_normal(n),
        )
        x = hiss / hiss.std() * 10 ** (-78 / 20) + colored(rng, n, 1.5) * 10 ** (-90 / 20)
    elif kind == "babble":
        if speech is None:
            raise ValueError("babble noise needs a speech source")
        x = speech(n)
        x = reverberate(x, rng)[:n] if x.any() else x
        x = x / max(float(x.std()), 1e-9) * 10 ** (-30 / 20)
    else:
        raise ValueError(f"unknown background kind {kind!r}; valid: {', '.join(BACKGROUND_KINDS)}")
    x = x * _slow_gain(rng, n, 6.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
