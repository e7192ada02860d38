"""The synthetic Speech Commands set: layout, format, splits, held-out families, determinism."""

from __future__ import annotations

import json
import os
import re
import signal
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kwscompress.config import FeatureConfig, SynthConfig
from kwscompress.data.splits import which_set
from kwscompress.data.synth import FILLER_WORDS, MANIFEST, effects, planned_clip_count, synthesize
from kwscompress.data.synth.builder import PRONUNCIATIONS
from kwscompress.data.synth.confusables import OTHER_SPEECH
from kwscompress.data.synth.voices import FAMILIES, plan_speakers
from kwscompress.errors import KwsError

TINY = SynthConfig(
    seed=7, speakers=3, repeats=2, unknown_repeats=1, noise_files=6, noise_seconds=1.0
)
WANTED = ["yes", "no"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[int]]:
    out = tmp_path_factory.mktemp("synth") / "set"
    calls: list[int] = []
    summary = synthesize(out, TINY, WANTED, progress=calls.append)
    return out, summary, calls


def _read_wav(path: Path) -> tuple[Any, np.ndarray]:
    with wave.open(str(path), "rb") as handle:
        params = handle.getparams()
        samples = np.frombuffer(handle.readframes(params.nframes), dtype="<i2")
    return params, samples


def test_layout_names_and_format(tiny_set) -> None:
    out, summary, _ = tiny_set
    words = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert set(WANTED) <= set(words)
    assert len(set(words) - set(WANTED)) >= 10
    manifest = json.loads((out / MANIFEST).read_text())
    confusable = {w for ws in manifest["words"]["confusables"].values() for w in ws}
    assert set(words) - set(WANTED) <= set(FILLER_WORDS) | set(OTHER_SPEECH) | confusable
    clips = sorted(out.glob("*/*_nohash_*.wav"))
    clips = [c for c in clips if c.parent.name != "_background_noise_"]
    assert len(clips) == planned_clip_count(TINY, WANTED) == summary["clips"]
    assert len(list((out / "yes").glob("*.wav"))) == TINY.speakers * TINY.repeats
    assert len(list((out / "cat").glob("*.wav"))) == TINY.speakers * TINY.unknown_repeats
    for clip in clips:
        assert re.fullmatch(r"[0-9a-f]{8}_nohash_\d+\.wav", clip.name)
        params, samples = _read_wav(clip)
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
        assert params.nframes == 16000
        assert np.abs(samples).max() > 300, f"{clip} holds no audible word"


def test_background_noise_files(tiny_set) -> None:
    out, _, _ = tiny_set
    noise = sorted((out / "_background_noise_").glob("*.wav"))
    assert len(noise) == TINY.noise_files
    levels = []
    for path in noise:
        params, samples = _read_wav(path)
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
        assert params.nframes == int(TINY.noise_seconds * 16000)
        levels.append(float(np.sqrt(np.mean(samples.astype(float) ** 2))))
    # From loud rumble down to a near-silent room tone of a few LSB.
    assert max(levels) > 500 and min(levels) < 10


def test_lists_agree_with_split_rule_and_held_out_only_in_testing(tiny_set) -> None:
    out, summary, _ = tiny_set
    listed = {
        split: set((out / f"{split}_list.txt").read_text().split())
        for split in ("validation", "testing")
    }
    manifest = json.loads((out / MANIFEST).read_text())
    held = {s["speaker_id"] for s in manifest["speakers"] if s["held_out"]}
    assert held, "the tiny set should have a held-out speaker"
    for clip in out.glob("*/*_nohash_*.wav"):
        if clip.parent.name == "_background_noise_":
            continue
        name = f"{clip.parent.name}/{clip.name}"
        split = which_set(name, 10.0, 10.0)
        for listed_split, names in listed.items():
            assert (name in names) == (split == listed_split), name
        if clip.name[:8] in held:
            assert split == "testing"
    assert summary["splits"]["testing"] == len(listed["testing"])


def test_manifest_describes_speakers(tiny_set) -> None:
    out, summary, _ = tiny_set
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == TINY.seed
    assert manifest["settings"]["speakers"] == TINY.speakers
    assert manifest["held_out_families"] == summary["held_out_families"]
    assert set(manifest["held_out_families"]) <= set(FAMILIES)
    assert len(manifest["speakers"]) == TINY.speakers
    for speaker in manifest["speakers"]:
        assert speaker["held_out"] == (speaker["family"] in manifest["held_out_families"])
        if speaker["engine"] == "espeak":
            assert speaker["voice"] == f"{speaker['family']}+{speaker['variant']}"
        assert {"rate", "pitch", "pitch_range", "formant_shift"} <= set(speaker)
    assert len(manifest["background_noise"]) == TINY.noise_files


def test_progress_counts_every_clip(tiny_set) -> None:
    _, summary, calls = tiny_set
    assert sum(calls) == summary["clips"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    config = SynthConfig(
        seed=3, speakers=2, repeats=1, unknown_repeats=0, noise_files=6, noise_seconds=1.0
    )
    first = _digest(tmp_path / "a", config, workers=2)
    again = _digest(tmp_path / "b", config, workers=1)
    other = _digest(tmp_path / "c", SynthConfig(**{**vars(config), "seed": 4}), workers=2)
    assert first == again
    clips = {name: data for name, data in first.items() if name.endswith(".wav")}
    assert not set(clips.values()) & set(other.values()), "another seed repeated a file"


def _digest(out: Path, config: SynthConfig, workers: int) -> dict[str, bytes]:
    synthesize(out, config, WANTED, workers=workers)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_wanted_word_from_filler_list_is_wanted(tmp_path: Path) -> None:
    config = SynthConfig(
        seed=1,
        speakers=1,
        repeats=2,
        unknown_repeats=0,
        confusables=0,
        other_speech_repeats=0,
        noise_files=0,
    )
    synthesize(tmp_path / "set", config, ["yes", "down"])
    assert len(list((tmp_path / "set" / "down").glob("*.wav"))) == 2
    assert planned_clip_count(config, ["yes", "down"]) == 4


def test_interrupted_synthesis_leaves_nothing(tmp_path: Path) -> None:
    def stop(_: int) -> None:
        raise KeyboardInterrupt

    config = SynthConfig(seed=1, speakers=2, repeats=1, unknown_repeats=0, noise_files=0)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "set", config, WANTED, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_and_bad_config_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KwsError, match="exists already"):
        synthesize(tmp_path, TINY, WANTED)
    with pytest.raises(KwsError, match="speakers"):
        synthesize(tmp_path / "new", SynthConfig(speakers=0), WANTED)


def test_phoneme_spellings_are_spoken_as_phonemes() -> None:
    """A ``[[...]]`` spelling of a word sounds like the word, not like its letters read as text
    (which made "[[j'Es]]" 28 % and "[[n'oU]]" 62 % longer than "yes" and "no")."""
    from kwscompress.data.synth.espeak import engine

    def seconds(text: str) -> float:
        spoken = engine().synth(f"{text}.", "en-us", rate=175, pitch=50, pitch_range=50)
        return effects.trim(spoken).size / engine().sample_rate

    for word, spelling in (("yes", "j'Es"), ("no", "n'oU")):
        assert spelling in PRONUNCIATIONS[word]
        assert seconds(f"[[{spelling}]]") == pytest.approx(seconds(word), rel=0.05)


def test_no_spelling_of_no_that_sounds_like_now() -> None:
    """``n'VU``, once a spelling of "no", is said nearer to "now" than to "no" by the American,
    British and Scottish voices, so it is not one of the spellings; the spelling ``n'oU`` is
    said as "no" (the check that the measure tells the two words apart). The distance is
    dynamic time warping over the frontend's features of the spoken frames."""
    from kwscompress.data.synth.espeak import engine
    from kwscompress.plugins import get_plugin_manager

    extractor = get_plugin_manager().component("feature_extractor", "micro")

    def features(text: str, voice: str) -> np.ndarray:
        spoken = engine().synth(text, voice, rate=175, pitch=50, pitch_range=50, noise_seed=1)
        audio = effects.resample(effects.trim(spoken), engine().sample_rate, 1.0)
        clip = np.zeros(16000, np.float32)
        clip[2000 : 2000 + min(len(audio), 14000)] = audio[:14000]
        frames = extractor.extract(clip[None], FeatureConfig(), 16000)[0]
        level = frames.mean(axis=1)
        return frames[level > level.min() + 0.2 * (level.max() - level.min())]

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        cost = np.linalg.norm(a[:, None] - b[None], axis=2)
        total = np.full((len(a) + 1, len(b) + 1), np.inf)
        total[0, 0] = 0.0
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                step = min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
                total[i, j] = cost[i - 1, j - 1] + step
        return float(total[-1, -1] / (len(a) + len(b)))

    assert "n'VU" not in PRONUNCIATIONS["no"]
    for voice in ("en-us", "en-gb-x-rp", "en-gb-scotland"):
        no, now = features("no", voice), features("now", voice)
        said = features("[[n'VU]]", voice)
        assert distance(said, now) < distance(said, no), voice
        said = features("[[n'oU]]", voice)
        assert distance(said, no) < distance(said, now) / 2, voice


def test_default_config_has_forty_distinct_voices() -> None:
    default = SynthConfig()
    speakers = plan_speakers(default.seed, default.speakers, 10.0, 10.0, default.flite_share)
    assert len({s.voice for s in speakers}) >= 40
    assert len({s.speaker_id for s in speakers}) == default.speakers
    held = [s for s in speakers if s.held_out]
    assert held and all(which_set(f"{s.speaker_id}_nohash_0", 10, 10) == "testing" for s in held)
    assert {s.family for s in speakers} == set(FAMILIES)  # Flite is off by default


def test_no_testing_split_means_no_held_out_family(tmp_path: Path) -> None:
    config = SynthConfig(seed=2, speakers=8, repeats=1, unknown_repeats=0, noise_files=0)
    summary = synthesize(tmp_path / "set", config, WANTED, testing_percentage=0.0)
    manifest = json.loads((tmp_path / "set" / MANIFEST).read_text())
    assert manifest["held_out_families"] == [] and summary["held_out_speakers"] == 0
    assert (tmp_path / "set" / "testing_list.txt").read_text() == ""


class _DyingJob:
    """A job whose process dies by a signal, as espeak-ng does (SIGSEGV) on a bad voice."""

    def __call__(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def names(self) -> list[str]:
        return ["never/written.wav"]

    def describe(self) -> str:
        return "the dying job"


def test_a_crashing_worker_is_an_error_not_a_hang() -> None:
    from kwscompress.data.synth.builder import _run

    with pytest.raises(KwsError, match=r"synthesis of the dying job failed \(exit status -9\)"):
        _run([_DyingJob()], workers=2, progress=None)
