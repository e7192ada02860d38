"""Flite, the second speech engine: the binding, the phone map, speakers and clips made with it."""

from __future__ import annotations

import ctypes.util
import itertools
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from kwscompress.config import SynthConfig
from kwscompress.data.splits import which_set
from kwscompress.data.synth import MANIFEST, flite, synthesize
from kwscompress.data.synth.voices import FLITE_FAMILY, plan_speakers
from kwscompress.errors import KwsError

needs_flite = pytest.mark.skipif(
    ctypes.util.find_library("flite_cmu_us_slt") is None,
    reason="libflite1 is not installed (`make flite` installs it)",
)


@needs_flite
def test_every_voice_speaks_a_word_at_16_khz() -> None:
    engine = flite.engine()
    for voice in flite.VOICES:
        audio = engine.synth("yes", voice)
        assert audio.dtype == np.float32 and 0.2 < audio.size / flite.SAMPLE_RATE < 1.5
        assert 0.05 < np.abs(audio).max() <= 1.0, voice


@needs_flite
def test_same_seed_same_samples_whatever_came_before() -> None:
    engine = flite.engine()
    first = engine.synth("no", "slt", seed=5)
    engine.synth("guess", "awb", seed=9)  # the unit selection's rand() has moved on
    assert np.array_equal(engine.synth("no", "slt", seed=5), first)
    slow = engine.synth("no", "slt", seed=5, duration_stretch=1.6)
    assert slow.size > 1.3 * first.size  # the stretch reaches the voice


@needs_flite
def test_non_words_are_spoken_from_espeak_phonemes() -> None:
    assert flite.flite_phones("'bandoUz") == "pau b ae n d ow z pau"
    assert flite.flite_phones("'SaIsTmp") == "pau sh ay s th m p pau"
    audio = flite.engine().synth(flite.flite_phones("'bandoUz"), "rms", phones=True)
    assert audio.size > 0.2 * flite.SAMPLE_RATE
    with pytest.raises(KwsError, match="'aI@'"):
        flite.flite_phones("'taI@")  # not in the non-words' inventory


def test_every_non_word_espeak_can_say_has_flite_phones() -> None:
    from kwscompress.data.synth.confusables import _CODAS, _NUCLEI, _ONSETS

    for onset, nucleus, coda, next_onset in itertools.product(
        _ONSETS, _NUCLEI, _CODAS, _ONSETS
    ):  # a syllable's edges: what tokenizing may join across
        flite.flite_phones(f"'{onset}{nucleus}{coda}{next_onset}{nucleus}")
    assert flite.flite_phones("'beIstSVp") == "pau b ey s ch ah p pau"


def test_a_missing_library_names_the_package_and_the_way_out(monkeypatch) -> None:
    monkeypatch.setattr(flite.ctypes.util, "find_library", lambda name: f"lib{name}-absent.so")
    with pytest.raises(KwsError, match=r"libflite1.*flite_share = 0"):
        flite._load("flite")


@needs_flite
def test_unknown_voice_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(KwsError, match="awb, rms, slt, kal16"):
        flite.engine().synth("yes", "kal")


def test_a_share_of_training_speakers_speak_with_flite_and_nothing_else_changes() -> None:
    speakers = plan_speakers(
        seed=3, count=40, validation_percentage=10, testing_percentage=10, flite_share=0.25
    )
    espeak_only = plan_speakers(3, 40, 10, 10)
    assert not any(s.engine == "flite" for s in espeak_only)
    training = [
        s for s in speakers if which_set(f"{s.speaker_id}_nohash_0.wav", 10, 10) == "training"
    ]
    voiced = [s for s in speakers if s.engine == "flite"]
    assert len(voiced) == len(training) // 4 and all(s in training for s in voiced)
    assert {s.voice for s in voiced} == set(flite.VOICES)  # every voice in turn
    assert all(s.family == FLITE_FAMILY for s in voiced)
    changed = [a for a, b in zip(speakers, espeak_only, strict=True) if a != b]
    assert changed == voiced  # the validation and testing speakers are those of espeak alone


@needs_flite
def test_flite_speakers_write_every_clip(tmp_path: Path) -> None:
    config = SynthConfig(seed=5, speakers=4, repeats=1, flite_share=1.0, noise_files=0)
    summary = synthesize(tmp_path / "set", config, ["yes", "no"])
    manifest = json.loads((tmp_path / "set" / MANIFEST).read_text())
    voiced = [s for s in manifest["speakers"] if s["engine"] == "flite"]
    assert summary["flite_speakers"] == len(voiced) == 3  # every seen speaker; one held out
    assert manifest["flite"].startswith("flite-")
    for speaker in voiced:
        for folder in ("yes", "no", "go", "yeah", "other-nonword", "other-phrase"):
            path = tmp_path / "set" / folder / f"{speaker['speaker_id']}_nohash_0.wav"
            with wave.open(str(path), "rb") as handle:
                assert handle.getframerate() == 16000 and handle.getnframes() == 16000
                samples = np.frombuffer(handle.readframes(16000), dtype="<i2")
            assert np.abs(samples).max() > 300, path  # speech, not the noise floor


def test_flite_voices_choose_the_voices_and_bad_names_are_refused() -> None:
    speakers = plan_speakers(3, 40, 10, 10, flite_share=0.5, flite_voices=["awb", "rms"])
    assert {s.voice for s in speakers if s.engine == "flite"} == {"awb", "rms"}
    with pytest.raises(KwsError, match=r"flite_voices.*\['kal'\]; valid: awb, rms, slt, kal16"):
        plan_speakers(3, 40, 10, 10, flite_share=0.5, flite_voices=["awb", "kal"])
    with pytest.raises(KwsError, match="flite_voices = \\[\\] is empty"):
        plan_speakers(3, 40, 10, 10, flite_share=0.5, flite_voices=[])


@needs_flite
def test_the_flite_build_is_part_of_the_dataset_key_only_when_used() -> None:
    from kwscompress.data.synth import generator_fingerprint

    with_flite = generator_fingerprint(SynthConfig(flite_share=0.125))
    assert with_flite.endswith(flite.flite_fingerprint())
    assert flite.flite_fingerprint() not in generator_fingerprint(SynthConfig())
