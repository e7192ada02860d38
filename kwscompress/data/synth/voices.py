"""Speakers: an English accent ("family") of espeak-ng, a voice variant and a manner of speaking.

A speaker of the synthetic set is one accent (``en-us``, ``en-gb-scotland``, ...) combined with one
of espeak-ng's voice variants (``m3``, ``f2``, ``klatt4``, ``whisper``, ...) and its own rate,
pitch, pitch range, formant shift, microphone and room. Accents are the families: whole families
are held out of training and validation so that evaluation measures accents the model never heard.
A share of the training speakers (``[data.synth] flite_share``) speak with one of Flite's voices
instead (:mod:`kwscompress.data.synth.flite`), family :data:`FLITE_FAMILY`, with the same rate,
formant shift, microphone and room drawn for them. Flite has only four voices, so its speakers
are training speakers only: in validation they would flatter the choice of the best epoch, in
testing they would be voices the model trained on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from kwscompress.data.splits import which_set
from kwscompress.data.synth.flite import VOICES as FLITE_VOICES
from kwscompress.errors import KwsError

FAMILIES = (
    "en-us",
    "en",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-us-nyc",
)
"""espeak-ng's English accents, one voice family each (``en`` is British English)."""

MICROPHONE_LOWPASS_HZ = (5000.0, 7800.0)
"""Range of a speaker's microphone high cut. Real recordings at 16 kHz keep the /s/ of "yes"
(4-8 kHz); band-limited speech comes from the ``band_limit_frequency`` augmentation instead. A
range starting at 2.8 kHz (before) left a third of the speakers duller than a telephone, whose
"yes" sounded like "yeah": one reason the model heard "yeah" as "yes" (:doc:`/rejection`)."""

FLITE_FAMILY = "flite"
"""The family of the speakers voiced by Flite (their variant is the Flite voice)."""

HELD_OUT_SHARE = 0.125
"""Share of the families (at least one) whose speakers all go to the testing split."""


CRASHING_VARIANTS = frozenset({"Demonic", "rob"})
"""Variants that crash espeak-ng 1.52 (segmentation fault) on some of the words; never used."""


@cache
def voice_variants() -> tuple[str, ...]:
    """The voice variants the installed espeak-ng data offers (``m1``, ``f3``, ``klatt``, ...)."""
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    # A space would not survive espeak's "language+variant" voice syntax.
    names = (name for name in os.listdir(folder) if " " not in name)
    return tuple(sorted(name for name in names if name not in CRASHING_VARIANTS))


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: voice, manner of speaking, microphone and room."""

    speaker_id: str
    """Eight lowercase hex digits, the ``SPEAKER`` of ``SPEAKER_nohash_N.wav``."""
    family: str
    """The espeak-ng accent (one of :data:`FAMILIES`)."""
    variant: str
    """The espeak-ng voice variant."""
    held_out: bool
    """True if the family is held out (the speaker is in the testing split only)."""
    rate: int
    """Words per minute (espeak-ng's rate)."""
    pitch: int
    """espeak-ng base pitch, 0-100."""
    pitch_range: int
    """espeak-ng pitch range, 0-100."""
    formant_shift: float
    """Speed factor of the resampling that moves pitch and formants together (>1 is higher)."""
    level_db: float
    """Typical peak level of the recordings in dBFS."""
    snr_db: float
    """Typical speech-to-recording-noise ratio in dB."""
    highpass_hz: float
    """Microphone low cut."""
    lowpass_hz: float
    """Microphone high cut."""
    reverb: float
    """Probability that a clip is recorded in a reverberant room."""

    @property
    def engine(self) -> str:
        """The speech engine: ``flite`` for the :data:`FLITE_FAMILY`, else ``espeak``."""
        return "flite" if self.family == FLITE_FAMILY else "espeak"

    @property
    def voice(self) -> str:
        """The voice name the engine takes: ``family+variant`` for espeak-ng (``en-us+m3``), the
        Flite voice (``slt``) for Flite."""
        return self.variant if self.engine == "flite" else f"{self.family}+{self.variant}"

    def to_json(self) -> dict[str, Any]:
        """The speaker as a JSON-ready dict (for the manifest)."""
        return {**asdict(self), "engine": self.engine, "voice": self.voice}


def held_out_families(seed: int, testing_percentage: float = 10.0) -> list[str]:
    """The families held out for a seed (none when there is no testing split)."""
    if testing_percentage <= 0:
        return []
    rng = np.random.default_rng([seed, 0x4E1D])
    count = max(1, round(len(FAMILIES) * HELD_OUT_SHARE))
    return sorted(rng.choice(FAMILIES, size=count, replace=False).tolist())


def plan_speakers(
    seed: int,
    count: int,
    validation_percentage: float,
    testing_percentage: float,
    flite_share: float = 0.0,
    flite_voices: Sequence[str] = FLITE_VOICES,
) -> list[Speaker]:
    """Draw ``count`` speakers and give each an id that the split rule puts where it belongs.

    A held-out group (about half as many speakers as the test split's share, at least one)
    speaks with the held-out families and goes to testing only, so training never hears them.
    The other speakers rotate through the remaining families and are spread over the splits in
    the configured proportions exactly, so even a small set has speakers in every split.
    ``flite_share`` of the training speakers, evenly spread through them, speak with the Flite
    voices ``flite_voices`` in turn instead. Everything else is drawn as if they did not (each
    still takes its espeak-ng variant from the deck), so the validation and testing speakers
    are those of ``flite_share = 0``, whose plan is the plan from before Flite came.
    """
    unknown = sorted(set(flite_voices) - set(FLITE_VOICES))
    if flite_share and (unknown or not flite_voices):
        raise KwsError(
            f"[data.synth] flite_voices = {list(flite_voices)} "
            f"{f'names {unknown}' if unknown else 'is empty'}; valid: {', '.join(FLITE_VOICES)}"
        )
    rng = np.random.default_rng([seed, 0x5EA7])
    held = held_out_families(seed, testing_percentage)
    seen_families = [str(f) for f in rng.permutation(FAMILIES) if f not in held]
    held_count = max(1, round(count * testing_percentage / 200)) if held else 0
    seen_count = count - held_count
    validation_count = round(seen_count * validation_percentage / 100)
    testing_count = round(seen_count * testing_percentage / 100)
    targets = ["validation"] * validation_count + ["testing"] * testing_count
    targets += ["training"] * (seen_count - len(targets))
    plan = [(held[i % len(held)], "testing", True) for i in range(held_count)]
    plan += [
        (seen_families[i % len(seen_families)], split, False)
        for i, split in enumerate(rng.permutation(targets))
    ]
    flite_rng = np.random.default_rng([seed, 0xF11E])  # apart, so share 0 keeps the old plan
    voices_left: list[str] = []
    variants: list[str] = []
    used: set[str] = set()
    speakers = []
    trained = 0
    for family, split, held_out in plan:
        if not variants:
            variants = list(rng.permutation(voice_variants()))
        variant = str(variants.pop())
        if split == "training":
            if int((trained + 1) * flite_share) > int(trained * flite_share):
                if not voices_left:
                    voices_left = list(flite_rng.permutation(list(flite_voices)))
                family, variant = FLITE_FAMILY, str(voices_left.pop())
            trained += 1
        speaker_id = _draw_id(rng, used, split, validation_percentage, testing_percentage)
        used.add(speaker_id)
        speakers.append(
            Speaker(
                speaker_id=speaker_id,
                family=family,
                variant=variant,
                held_out=held_out,
                rate=int(rng.integers(105, 300)),  # slow to fast talkers
                pitch=int(rng.integers(10, 91)),
                pitch_range=int(rng.integers(10, 101)),
                formant_shift=float(np.exp(rng.uniform(np.log(0.84), np.log(1.2)))),
                level_db=float(rng.uniform(-30.0, -1.0)),
                snr_db=float(rng.uniform(20.0, 50.0)),
                highpass_hz=float(np.exp(rng.uniform(np.log(40.0), np.log(400.0)))),
                lowpass_hz=float(rng.uniform(*MICROPHONE_LOWPASS_HZ)),
                reverb=float(rng.uniform(0.0, 0.5)),
            )
        )
    return speakers


def _draw_id(
    rng: np.random.Generator, used: set[str], split: str, validation: float, testing: float
) -> str:
    # Rejection sampling: an id of a 10 % split takes about ten draws.
    while True:
        speaker_id = f"{int(rng.integers(0, 2**32)):08x}"
        if (
            speaker_id not in used
            and which_set(f"{speaker_id}_nohash_0.wav", validation, testing) == split
        ):
            return speaker_id


def clip_seed(seed: int, speaker_id: str, word: str, repeat: int) -> list[int]:
    """Seed material of one clip, independent of the order clips are made in."""
    digest = hashlib.sha1(f"{speaker_id}/{word}/{repeat}".encode()).digest()
    return [seed, int.from_bytes(digest[:8], "little")]
