"""The embedded offline synthetic Speech Commands dataset, spoken by espeak-ng (optionally Flite).

:func:`synthesize` writes a folder in the exact layout of Speech Commands v0.02 (one folder per
word, ``SPEAKER_nohash_N.wav`` clips, ``validation_list.txt``, ``testing_list.txt``,
``_background_noise_``) plus ``synth_manifest.json`` describing every speaker.
"""

from kwscompress.data.synth.builder import (
    FILLER_WORDS,
    MANIFEST,
    filler_words,
    generator_fingerprint,
    planned_clip_count,
    synthesize,
)

__all__ = [
    "FILLER_WORDS",
    "MANIFEST",
    "filler_words",
    "generator_fingerprint",
    "planned_clip_count",
    "synthesize",
]
