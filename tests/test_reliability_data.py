"""Issue 9, data: truncated WAVs, empty word folders, cut or padded clips, unusable noise, and a
feature cache that survives being moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from support import SAMPLE_RATE, speakers_for, tone
from toys import ToneSource, ToyExtractor

from kwscompress import Pipeline, hookimpl
from kwscompress.config import Config, DataConfig
from kwscompress.data.audio import UnusableAudio, read_clip
from kwscompress.data.dataset import AudioLoader, index_dataset
from kwscompress.errors import DataError
from kwscompress.stages import features as features_stage


def _truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    header = 44  # soundfile's PCM_16 WAV header: RIFF, fmt and the data chunk's 8 bytes
    assert data[36:40] == b"data"
    path.write_bytes(data[: header + (len(data) - header) // 2])


def test_truncated_wav_is_skipped_with_the_reason(tmp_path: Path, make_dataset) -> None:
    clip = tmp_path / "half.wav"
    soundfile.write(clip, tone(600), SAMPLE_RATE, subtype="PCM_16")
    _truncate_to_half(clip)
    with pytest.raises(UnusableAudio, match=r"truncated: the header declares 32000 bytes .* 16000"):
        read_clip(clip, SAMPLE_RATE)

    root = make_dataset()
    victim = sorted((root / "yes").glob("*.wav"))[0]
    _truncate_to_half(victim)
    index = index_dataset(root, DataConfig())
    loader = AudioLoader(index, DataConfig(augment_copies=1))
    split = next(s for s, clips in index.splits.items() if any(c.path == victim for c in clips))
    decoded = loader.load(split)
    assert victim not in [c.path for c in decoded.clips]
    assert index.skipped_files == [
        {"path": f"yes/{victim.name}", "reason": index.skipped_files[0]["reason"]}
    ]
    assert index.skipped_files[0]["reason"].startswith("truncated:")


def test_streamed_wav_with_open_size_is_not_called_truncated(tmp_path: Path) -> None:
    # Streaming writers leave the data size 0 or 0xFFFFFFFF; such a file is complete.
    clip = tmp_path / "stream.wav"
    soundfile.write(clip, tone(600), SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(clip.read_bytes())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    clip.write_bytes(bytes(data))
    assert len(read_clip(clip, SAMPLE_RATE).audio) == SAMPLE_RATE


def test_wanted_word_folder_without_wav_files_is_one_clear_error(make_dataset) -> None:
    root = make_dataset()
    (root / "up").mkdir()
    (root / "up" / "README.txt").write_text("clips go here")
    with pytest.raises(DataError) as info:
        index_dataset(root, DataConfig(wanted_words=["yes", "up"]))
    assert str(info.value) == (
        f"wanted word 'up': its folder {str(root / 'up')!r} holds no .wav files; add clips or "
        "remove the word from data.wanted_words"
    )


def test_wanted_word_without_training_clips_is_an_error(make_dataset) -> None:
    root = make_dataset()
    (root / "up").mkdir()
    speaker = speakers_for("testing", 1)[0]
    soundfile.write(root / "up" / f"{speaker}_nohash_0.wav", tone(900), SAMPLE_RATE)
    with pytest.raises(DataError, match=r"wanted word 'up': none of the \.wav files .* training"):
        index_dataset(root, DataConfig(wanted_words=["up"]))


def _pipeline(pm, root: Path, run_dir: Path, cache: Path | None = None) -> Pipeline:
    class Plugin:
        @hookimpl
        def kws_register_datasets(self) -> list[object]:
            return [ToneSource(root)]

        @hookimpl
        def kws_register_feature_extractors(self) -> list[object]:
            return [ToyExtractor()]

    if pm.get_plugin("reliability-data") is not None:
        pm.unregister(name="reliability-data")
    pm.register(Plugin(), name="reliability-data")
    values = {
        "data": {"source": "tones", "augment_copies": 1},
        "features": {"name": "toy"},
        "run": {"cache_dir": str(cache) if cache else ""},
        **{k: {"enabled": False} for k in ("compress", "export", "deploy")},
    }
    return Pipeline(Config.from_dict(values), plugin_manager=pm, run_dir=run_dir)


def test_cut_and_padded_clips_are_listed_in_results(pm, make_dataset, tmp_path: Path) -> None:
    root = make_dataset()
    speaker = speakers_for("training", 3)
    odd = {
        f"yes/{speaker[0]}_nohash_7.wav": tone(600, seconds=3.0),
        f"yes/{speaker[1]}_nohash_7.wav": tone(600, seconds=0.2),
        f"yes/{speaker[2]}_nohash_7.wav": tone(600)[:100],
    }
    for name, audio in odd.items():
        soundfile.write(root / name, audio, SAMPLE_RATE, subtype="PCM_16")
    pipe = _pipeline(pm, root, tmp_path / "run")
    pipe.features()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    converted = {entry["path"]: entry["conversion"] for entry in results["data"]["converted_files"]}
    assert converted == {
        f"yes/{speaker[0]}_nohash_7.wav": "cut from 48000 to 16000 samples",
        f"yes/{speaker[1]}_nohash_7.wav": "zero-padded from 3200 to 16000 samples",
        f"yes/{speaker[2]}_nohash_7.wav": "zero-padded from 100 to 16000 samples",
    }


def test_unusable_noise_file_is_not_counted(pm, make_dataset, tmp_path: Path) -> None:
    root = make_dataset()
    (root / "_background_noise_" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio")
    index = index_dataset(root, DataConfig())
    assert [p.name for p in index.background_files] == ["white.wav"]
    assert index.skipped_files[0]["path"] == "_background_noise_/broken.wav"
    pipe = _pipeline(pm, root, tmp_path / "run")
    pipe.load_data()
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["background_files"] == 1
    assert data["skipped_files"][0]["path"] == "_background_noise_/broken.wav"


def test_moved_cache_and_dataset_keep_their_features(pm, make_dataset, tmp_path: Path) -> None:
    root = make_dataset()
    first = _pipeline(pm, root, tmp_path / "run1", cache=tmp_path / "cache")
    first.features()
    assert first.run_record.results["features"]["cache_hit"] is False
    key = first.run_record.results["features"]["cache_key"]
    moved_root = tmp_path / "elsewhere" / "ds"
    shutil.move(root, moved_root)
    shutil.move(tmp_path / "cache", tmp_path / "elsewhere" / "cache")
    second = _pipeline(pm, moved_root, tmp_path / "run2", cache=tmp_path / "elsewhere" / "cache")
    sets = second.features()
    assert second.run_record.results["features"]["cache_key"] == key
    assert second.run_record.results["features"]["cache_hit"] is True
    assert np.array_equal(
        sets.splits["testing"].labels, first.feature_sets.splits["testing"].labels
    )


def test_builder_version_is_part_of_the_feature_cache_key(make_dataset, monkeypatch) -> None:
    # The project's own augmentation code is not covered by any plugin version: a change to it
    # must not load arrays that the old code computed.
    index = index_dataset(make_dataset(), DataConfig())
    extractor = ToyExtractor()

    def key() -> str:
        return features_stage.cache_key(index, DataConfig(), extractor, "1.0", {})

    before = key()
    assert key() == before
    monkeypatch.setattr(features_stage, "BUILDER_VERSION", features_stage.BUILDER_VERSION + 1)
    assert key() != before


def test_impossible_sample_rate_is_refused_at_once(tmp_path: Path) -> None:
    # Found by benchmarks/bench_fuzz.py: a header claiming 1.6 GHz sent resampling into a
    # minutes-long loop (libFuzzer timeout) instead of an error.
    clip = tmp_path / "rate.wav"
    soundfile.write(clip, tone(600, seconds=0.05), SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(clip.read_bytes())
    data[24:28] = (1_635_017_060).to_bytes(4, "little")
    clip.write_bytes(bytes(data))
    with pytest.raises(UnusableAudio, match=r"sample rate 1635017060 Hz is outside 1000\.\.384000"):
        read_clip(clip, SAMPLE_RATE, SAMPLE_RATE)
