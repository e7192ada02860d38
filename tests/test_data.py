"""The dataset reader: split rule, class sampling, bad files, augmentation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from support import SAMPLE_RATE, tone

from kwscompress.config import DataConfig
from kwscompress.data.audio import UnusableAudio, read_clip
from kwscompress.data.dataset import AudioLoader, index_dataset
from kwscompress.data.splits import MAX_NUM_WAVS_PER_CLASS, speaker_of, which_set
from kwscompress.errors import DataError


def test_split_rule_is_speech_commands_hash() -> None:
    # Recompute the published rule independently for a batch of names.
    for n in range(200):
        name = f"{n * 7919:08x}_nohash_{n % 5}.wav"
        value = int(hashlib.sha1(name.split("_nohash_")[0].encode()).hexdigest(), 16)
        pct = (value % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
        expected = "validation" if pct < 10 else "testing" if pct < 20 else "training"
        assert which_set(name, 10, 10) == expected
    assert speaker_of("yes/0a7c2a8d_nohash_3.wav") == "0a7c2a8d"


def test_same_speaker_same_split_and_shares_are_close() -> None:
    names = [f"{n:08x}_nohash_{k}.wav" for n in range(3000) for k in range(2)]
    splits = [which_set(name, 10, 10) for name in names]
    assert all(splits[i] == splits[i + 1] for i in range(0, len(names), 2))
    share = splits.count("validation") / len(splits)
    assert 0.08 < share < 0.12


def test_index_counts_silence_and_unknown_from_percentages(make_dataset) -> None:
    root = make_dataset(per_split=4)
    index = index_dataset(root, DataConfig(silence_percentage=50, unknown_percentage=25))
    summary = index.split_summary()
    assert index.labels == ["_silence_", "_unknown_", "yes", "no"]
    for split in ("training", "validation", "testing"):
        row = summary[split]
        assert row["yes"] == row["no"] == 4
        assert row["_silence_"] == 4  # 50 % of 8 wanted clips
        assert row["_unknown_"] == 2  # 25 % of 8, drawn from cat and dog
        assert row["total"] == 14


def test_missing_dataset_and_missing_word_are_named(tmp_path: Path, make_dataset) -> None:
    with pytest.raises(DataError, match="does not exist"):
        index_dataset(tmp_path / "nowhere", DataConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no word folders"):
        index_dataset(tmp_path / "empty", DataConfig())
    root = make_dataset()
    with pytest.raises(DataError, match=r"wanted word 'left' has no folder.*cat, dog, no, yes"):
        index_dataset(root, DataConfig(wanted_words=["yes", "left"]))


def _write(path: Path, data: np.ndarray, rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def test_sound_conversions(tmp_path: Path) -> None:
    signal = tone(700)
    stereo = read_clip(_write(tmp_path / "s.wav", np.stack([signal, signal], 1)), SAMPLE_RATE)
    assert "2 channels mixed to mono" in stereo.conversions
    assert np.allclose(stereo.audio, signal, atol=1e-3)
    u8 = read_clip(_write(tmp_path / "u8.wav", signal, subtype="PCM_U8"), SAMPLE_RATE)
    assert u8.conversions == ["PCM_U8 samples converted to float"]
    assert np.allclose(u8.audio, signal, atol=2e-2)
    fl = read_clip(_write(tmp_path / "f.wav", signal, subtype="FLOAT"), SAMPLE_RATE)
    assert np.allclose(fl.audio, signal, atol=1e-6)
    resampled = read_clip(_write(tmp_path / "r.wav", tone(700, level=0.5)[::2], 8000), SAMPLE_RATE)
    assert "resampled from 8000 Hz to 16000 Hz" in resampled.conversions
    assert len(resampled.audio) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(resampled.audio))
    assert abs(np.argmax(spectrum) - 700) <= 2  # 1 Hz per bin: the tone kept its pitch


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "unreadable"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "unreadable"),
    ],
)
def test_unreadable_files_raise(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UnusableAudio, match=reason):
        read_clip(path, SAMPLE_RATE)


def test_empty_truncated_and_out_of_range(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(UnusableAudio, match="empty"):
        read_clip(empty, SAMPLE_RATE)
    full = _write(tmp_path / "full.wav", tone(300))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(full.read_bytes()[:44])  # header promises 32 KB, holds none
    with pytest.raises(UnusableAudio, match="truncated: the header declares 32000 bytes"):
        read_clip(truncated, SAMPLE_RATE)
    loud = _write(tmp_path / "loud.wav", 3 * tone(300), subtype="FLOAT")
    with pytest.raises(UnusableAudio, match="outside"):
        read_clip(loud, SAMPLE_RATE)


def test_bad_files_are_skipped_and_reported(make_dataset) -> None:
    root = make_dataset()
    victim = sorted((root / "yes").glob("*.wav"))[0]
    victim.write_bytes(b"not a wav")
    stereo = sorted((root / "no").glob("*.wav"))[0]
    _write(stereo, np.stack([tone(1500), tone(1500)], 1))
    index = index_dataset(root, DataConfig())
    loader = AudioLoader(index, DataConfig())
    loaded = {split: loader.load(split) for split in index.splits}
    assert index.skipped_files == [
        {"path": f"yes/{victim.name}", "reason": index.skipped_files[0]["reason"]}
    ]
    assert "unreadable" in index.skipped_files[0]["reason"]
    assert index.converted_files[0]["path"] == f"no/{stereo.name}"
    total = sum(len(a.labels) for a in loaded.values())
    assert total == sum(len(c) for c in index.splits.values()) - 1


def test_training_is_augmented_and_evaluation_is_deterministic(make_dataset) -> None:
    root = make_dataset()
    config = DataConfig(augment_copies=3, silence_percentage=50)
    index = index_dataset(root, config)
    loader = AudioLoader(index, config)
    training = loader.load("training")
    copies = list(training.copies())
    assert len(copies) == 3 and copies[0].shape == (len(training.labels), SAMPLE_RATE)
    speech = training.labels > 1
    # Copies differ (shift and noise), so the features of each epoch differ.
    assert not np.allclose(copies[0][speech], copies[1][speech])
    # Copies are made on demand, one at a time, and every pass makes the same ones.
    assert all(np.array_equal(a, b) for a, b in zip(training.copies(), copies, strict=True))
    first, second = loader.load("validation"), AudioLoader(index, config).load("validation")
    (validation,) = first.copies()
    assert np.array_equal(validation, next(second.copies()))
    # Validation speech is not shifted and gets no noise: it equals the file.
    path_clip = next(c for c in first.clips if c.path is not None)
    position = first.clips.index(path_clip)
    file_audio = read_clip(path_clip.path, SAMPLE_RATE, SAMPLE_RATE).audio
    assert np.array_equal(validation[position], file_audio)
    # Silence is background noise at a random volume, never all zeros.
    silence = validation[first.labels == 0]
    assert len(silence) and all(np.abs(s).max() > 0 for s in silence)


def test_later_training_copies_draw_other_unknown_clips(make_dataset) -> None:
    root = make_dataset(per_split=6)
    plain = dict(time_shift_ms=0, background_frequency=0, speed_frequency=0, level_db=0)
    config = DataConfig(unknown_percentage=25, augment_copies=4, band_limit_frequency=0, **plain)
    index = index_dataset(root, config)
    training = AudioLoader(index, config).load("training")
    pool = [read_clip(c.path, SAMPLE_RATE, SAMPLE_RATE).audio for c in index.unknown_pool]
    sampled = [c for c in training.clips if c.label == 1]
    assert len(pool) == 12 and len(sampled) == 3  # cat and dog of 6 speakers; 25 % of 12
    assert index.unknown_pool[:3] == sampled
    copies = list(training.copies())
    unknown = training.labels == 1
    drawn = [
        [next(k for k, clip in enumerate(pool) if np.array_equal(clip, audio)) for audio in c]
        for c in (copy[unknown] for copy in copies)
    ]
    # The first copy holds the sampled clips, each later one the pool's next ones, round it.
    assert drawn == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # Each copy names the words its examples say: the drawn clips' folders, the keywords',
    # and _silence_.
    said = [np.array(training.words(i), dtype=object) for i in range(4)]
    assert [s[unknown].tolist() for s in said] == [
        [index.unknown_pool[k].path.parent.name for k in row] for row in drawn
    ]
    assert {w for row in drawn for w in (index.unknown_pool[k].path.parent.name for k in row)} == {
        "cat",
        "dog",
    }
    for s in said:
        assert s[training.labels == 0].tolist() == ["_silence_"] * int((training.labels == 0).sum())
        assert s[training.labels > 1].tolist() == [
            index.labels[label] for label in training.labels[training.labels > 1]
        ]
    # Keywords keep their places, and each pass makes the same copies.
    speech = training.labels > 1
    assert all(np.array_equal(c[speech], copies[0][speech]) for c in copies)
    assert all(np.array_equal(a, b) for a, b in zip(training.copies(), copies, strict=True))
    fixed = DataConfig(**{**vars(config), "redraw_unknown": False})
    same = list(AudioLoader(index_dataset(root, fixed), fixed).load("training").copies())
    words = training.labels > 0
    assert all(np.array_equal(c[words], same[0][words]) for c in same[1:])
    assert index_dataset(root, fixed).fingerprint() != index.fingerprint()


def test_silence_without_noise_files_is_a_clear_error(make_dataset) -> None:
    root = make_dataset()
    for path in (root / "_background_noise_").glob("*.wav"):
        path.unlink()
    index = index_dataset(root, DataConfig())
    with pytest.raises(DataError, match=r"_background_noise_.*silence_percentage = 0"):
        AudioLoader(index, DataConfig())
