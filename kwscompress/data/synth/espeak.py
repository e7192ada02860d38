"""A minimal ctypes binding of espeak-ng, loaded from the ``espeakng-loader`` wheel.

espeak-ng keeps its state in globals, so one process holds one engine: :func:`engine` creates it
on first use and reuses it. Synthesis is synchronous: a callback collects the samples of one
utterance into a buffer that :meth:`Espeak.synth` returns.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np

from kwscompress.errors import KwsError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES = 0x100
"""``espeakPHONEMES``: read ``[[...]]`` in the text as phoneme mnemonics. Without it espeak-ng
reads the brackets' letters as text: ``[[j'Es]]`` came out as a 28 % longer word that TFLM's
model, trained on real speech, heard as "yes" 13 % of the time against 85 % with the flag."""
_PARAMETERS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Espeak:
    """One initialised espeak-ng engine (use :func:`engine`, never two per process)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        # espeak-ng accepts the folder that holds espeak-ng-data, in every version.
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise KwsError(f"espeak-ng could not load its data from {data_parent.decode()!r}")
        self.sample_rate: int = rate
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.Array, count: int, _events: int) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synth(
        self,
        text: str,
        voice: str,
        *,
        rate: int,
        pitch: int,
        pitch_range: int,
        volume: int = 100,
        wordgap: int = 0,
        noise_seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+m3``); return float32 samples in [-1, 1].

        ``[[...]]`` in ``text`` is spoken as espeak-ng phoneme mnemonics (``[[j'Es]]`` is "yes").

        ``noise_seed`` seeds espeak-ng's random generator (and the C library's ``rand``), which
        its noise sources (aspiration, breath) draw from, so a call gives the same samples in
        any process whatever it synthesised before.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise KwsError(f"espeak-ng has no voice {voice!r}; see espeak-ng --voices")
        values = {
            "rate": rate,
            "pitch": pitch,
            "range": pitch_range,
            "volume": volume,
            "wordgap": wordgap,
        }
        for name, value in values.items():
            self._lib.espeak_SetParameter(_PARAMETERS[name], int(value), 0)
        self._lib.espeak_ng_SetRandSeed(noise_seed & 0x7FFFFFFF)
        self._libc.srand(ctypes.c_uint(noise_seed & 0xFFFFFFFF))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES, None, None
        )
        if status != 0:
            raise KwsError(f"espeak-ng failed to speak {text!r} with voice {voice!r}")
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


def espeak_version() -> str:
    """The version of the espeak-ng library (without initialising an engine)."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib.espeak_Info(None).decode()


@cache
def engine() -> Espeak:
    """The process's espeak-ng engine, initialised on first use."""
    return Espeak()
