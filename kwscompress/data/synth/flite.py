"""A minimal ctypes binding of CMU Flite, a second speech engine built from recorded speakers.

espeak-ng is a formant synthesizer: every voice it makes shares one source model, and a model
trained on it alone learns that model (:doc:`/rejection`). Flite's ``awb``, ``rms`` and ``slt``
voices are unit-selection voices cut from recordings of real speakers (a Scottish man, an
American man and an American woman) and ``kal16`` is a diphone voice of another American man,
so a share of the synthetic speakers (``[data.synth] flite_share``) speak with real voice
sources. PyPI has no Flite, so the library comes from the Debian package ``libflite1`` (the
Makefile installs it).

Flite's voices are registered once per process (:func:`engine`); synthesis is synchronous. The
unit-selection voices draw from the C library's ``rand``, so each call seeds it: the same text,
settings and seed give the same samples whatever the process spoke before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache

import numpy as np

from kwscompress.errors import KwsError

VOICES = ("awb", "rms", "slt", "kal16")
"""The Flite voices speakers are drawn from (``kal``, the 8 kHz twin of ``kal16``, is left out)."""

SAMPLE_RATE = 16000
"""The rate of every voice in :data:`VOICES`."""


INSTALL_HINT = (
    "install the Debian package libflite1 (`make flite`, or `apt-get install libflite1`), "
    "or set [data.synth] flite_share = 0 to synthesize with espeak-ng alone"
)


class _Wave(ctypes.Structure):
    # cst_wave of flite's cst_wave.h
    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


ESPEAK_TO_FLITE = {
    **{c: c for c in ("p", "b", "t", "d", "k", "g", "f", "v", "s", "z", "m", "n", "l", "r", "w")},
    **{"h": "hh", "S": "sh", "N": "ng", "T": "th"},
    **{"a": "ae", "E": "eh", "I": "ih", "0": "aa", "V": "ah", "U": "uh", "i:": "iy", "u:": "uw"},
    **{"eI": "ey", "aI": "ay", "oU": "ow", "aU": "aw", "3:": "er", "A:": "aa", "O:": "ao"},
    # A coda's "t" before an onset's "S" reads as one affricate, to espeak-ng's ear too.
    **{"tS": "ch", "dZ": "jh"},
}
"""espeak-ng phoneme mnemonics (those the non-words of :func:`~kwscompress.data.synth.
confusables.other_speech` are made of) and Flite's US English phones (CMU's ARPAbet)."""


def flite_phones(espeak_phonemes: str) -> str:
    """The Flite phone string (``pau b ae n pau``) of espeak-ng phonemes (``'ban``)."""
    from kwscompress.data.synth.confusables import tokens

    phones = []
    for token in tokens(espeak_phonemes):
        if token not in ESPEAK_TO_FLITE:
            raise KwsError(
                f"no Flite phone for the espeak-ng phoneme {token!r} of {espeak_phonemes!r}; "
                f"known: {' '.join(ESPEAK_TO_FLITE)}"
            )
        phones.append(ESPEAK_TO_FLITE[token])
    return " ".join(["pau", *phones, "pau"])


class _Voice(ctypes.Structure):
    # The leading fields of cst_voice of flite's cst_voice.h: the rest is never touched.
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p)]


class Flite:
    """Flite with its voices registered (use :func:`engine`, one per process)."""

    def __init__(self) -> None:
        self._lib = _load("flite")
        self._libc = ctypes.CDLL(None)
        lib = self._lib
        lib.flite_text_to_wave.restype = ctypes.POINTER(_Wave)
        lib.flite_text_to_wave.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Voice)]
        lib.flite_feat_set_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]
        lib.delete_wave.argtypes = [ctypes.POINTER(_Wave)]
        lib.flite_synth_phones.restype = ctypes.c_void_p
        lib.flite_synth_phones.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Voice)]
        lib.utt_wave.restype = ctypes.POINTER(_Wave)
        lib.utt_wave.argtypes = [ctypes.c_void_p]
        lib.delete_utterance.argtypes = [ctypes.c_void_p]
        lib.flite_init()
        self._voices: dict[str, ctypes._Pointer[_Voice]] = {}
        for name in VOICES:
            register = getattr(_load(f"flite_cmu_us_{name}"), f"register_cmu_us_{name}")
            register.restype = ctypes.POINTER(_Voice)
            register.argtypes = [ctypes.c_char_p]
            voice = register(None)
            if not voice:
                raise KwsError(f"Flite could not register its voice {name!r}; {INSTALL_HINT}")
            self._voices[name] = voice

    def synth(
        self,
        text: str,
        voice: str,
        *,
        duration_stretch: float = 1.0,
        phones: bool = False,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text`` with ``voice`` (one of :data:`VOICES`) at 16 kHz, ``duration_stretch``
        times as slow as the voice's own rate; return float32 samples in [-1, 1].

        With ``phones``, ``text`` is a Flite phone string (:func:`flite_phones`), not words.
        ``seed`` seeds the C library's ``rand`` that unit selection draws from.
        """
        if voice not in self._voices:
            raise KwsError(f"Flite has no voice {voice!r}; valid: {', '.join(VOICES)}")
        handle = self._voices[voice]
        self._lib.flite_feat_set_float(
            handle.contents.features, b"duration_stretch", float(duration_stretch)
        )
        self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        if phones:
            utterance = self._lib.flite_synth_phones(text.encode(), handle)
            if not utterance:
                raise KwsError(f"Flite failed to speak the phones {text!r} with voice {voice!r}")
            try:
                return _samples(self._lib.utt_wave(utterance), voice)
            finally:
                self._lib.delete_utterance(utterance)  # it owns its wave
        wave = self._lib.flite_text_to_wave(text.encode("utf-8"), handle)
        if not wave:
            raise KwsError(f"Flite failed to speak {text!r} with voice {voice!r}")
        try:
            return _samples(wave, voice)
        finally:
            self._lib.delete_wave(wave)


def _samples(wave: ctypes._Pointer[_Wave], voice: str) -> np.ndarray:
    w = wave.contents
    if w.sample_rate != SAMPLE_RATE or w.num_channels != 1:
        raise KwsError(
            f"Flite voice {voice!r} speaks {w.num_channels} channel(s) at {w.sample_rate} Hz; "
            f"expected mono at {SAMPLE_RATE} Hz"
        )
    if w.num_samples == 0:
        return np.zeros(0, np.float32)
    return np.ctypeslib.as_array(w.samples, shape=(w.num_samples,)).astype(np.float32) / 32768.0


def _load(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(ctypes.util.find_library(name) or f"lib{name}.so.1")
    except OSError:
        raise KwsError(f"the Flite library lib{name} is not installed; {INSTALL_HINT}") from None


@cache
def engine() -> Flite:
    """The process's Flite, its voices registered on first use."""
    return Flite()


@cache
def flite_fingerprint() -> str:
    """What the installed Flite says, as a short digest: one word in every voice.

    The library carries no version string, and its voices decide the files, so their samples
    stand for the build in the dataset's cache key.
    """
    digest = hashlib.sha1()
    for voice in VOICES:
        digest.update(engine().synth("yes", voice).tobytes())
    return f"flite-{digest.hexdigest()[:12]}"
