"""Helpers shared by the tests: small audio and speaker ids for the hash split."""

from __future__ import annotations

import itertools

import numpy as np

from kwscompress.data.splits import which_set

SAMPLE_RATE = 16000


def speakers_for(
    split: str, count: int, validation: float = 10.0, testing: float = 10.0
) -> list[str]:
    """``count`` 8-hex speaker ids that the hash rule puts in ``split``."""
    found = []
    for n in itertools.count():
        speaker = f"{n:08x}"
        if which_set(f"{speaker}_nohash_0.wav", validation, testing) == split:
            found.append(speaker)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


def tone(freq: float, seconds: float = 1.0, level: float = 0.5, seed: int = 0) -> np.ndarray:
    """A tone burst with a little noise: a stand-in 'word' whose class the features can tell."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    envelope = np.exp(-(((t - seconds / 2) / (seconds / 6)) ** 2))
    signal = level * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


WORD_TONES = {"yes": 500.0, "no": 1500.0, "cat": 3000.0, "dog": 4500.0}
