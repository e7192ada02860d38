"""Streaming evaluation: stream builder, recognizer-driven scoring, metric arithmetic, tuning."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from support import SAMPLE_RATE, speakers_for

from kwscompress.config import Config, RecognizerConfig
from kwscompress.errors import KwsError
from kwscompress.recognizer import RecognizerSettings, recognize_stream
from kwscompress.stream import builder, runner, tuning
from kwscompress.stream.labels import read_labels, write_labels
from kwscompress.stream.metrics import match_detections, rates, score_stream

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def _burst(start_s: float, length_s: float, freq: float = 800.0, seed: int = 0) -> np.ndarray:
    """A 1 s clip: faint noise with a loud tone from ``start_s`` for ``length_s``."""
    rng = np.random.default_rng(seed)
    clip = 0.001 * rng.standard_normal(SAMPLE_RATE)
    a, b = int(start_s * SAMPLE_RATE), int((start_s + length_s) * SAMPLE_RATE)
    t = np.arange(b - a) / SAMPLE_RATE
    clip[a:b] += 0.5 * np.sin(2 * np.pi * freq * t)
    return clip.astype(np.float32)


def _write(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


def test_speech_extent_finds_the_burst():
    start, end = builder.speech_extent(_burst(0.3, 0.25), SAMPLE_RATE)
    assert abs(start - 0.3 * SAMPLE_RATE) <= 160
    assert abs(end - 0.55 * SAMPLE_RATE) <= 160
    assert builder.speech_extent(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE) == (0, 0)


def test_stream_events_are_where_the_energy_is(tmp_path: Path):
    spans = [(0.1, 0.2), (0.5, 0.4), (0.3, 0.3), (0.05, 0.6)]
    paths = [
        _write(tmp_path / "yes" / f"{i:08x}_nohash_0.wav", _burst(s, n, seed=i))
        for i, (s, n) in enumerate(spans)
    ]
    clips = [builder.SourceClip(path, "yes", "keyword") for path in paths]
    stream = builder.build_stream(
        clips, [], np.random.default_rng(1), SAMPLE_RATE, (800.0, 1500.0), 0.0, tmp_path
    )
    assert [e.file for e in stream.events] == [f"yes/{i:08x}_nohash_0.wav" for i in range(4)]
    frame = SAMPLE_RATE // 100
    energy = (stream.audio[: len(stream.audio) // frame * frame].reshape(-1, frame) ** 2).mean(1)
    loud = energy > 0.01
    recorded = np.zeros_like(loud)
    for event, (_, length) in zip(stream.events, spans, strict=True):
        assert event.end_ms - event.start_ms == pytest.approx(1000 * length, abs=10)
        recorded[int(event.start_ms // 10) : int(np.ceil(event.end_ms / 10))] = True
    # Every loud frame lies in a recorded word and (but for the edge frames) vice versa.
    assert not (loud & ~recorded).any()
    assert (recorded & ~loud).sum() <= 2 * len(spans)
    # Gaps between words are within the asked range.
    for before, after in zip(stream.events, stream.events[1:], strict=False):
        assert after.start_ms - before.end_ms >= 800


def test_choose_events_keeps_the_keyword_share_without_repeats():
    clips = [builder.SourceClip(Path(f"k{i}"), "yes", "keyword") for i in range(50)]
    clips += [builder.SourceClip(Path(f"f{i}"), "bed", "filler") for i in range(200)]
    chosen = builder.choose_events(clips, 200.0, 0.25, 2.0, np.random.default_rng(0))
    assert len(chosen) == 100
    assert sum(c.kind == "keyword" for c in chosen) == 25
    assert len({c.path for c in chosen}) == 100


def test_choose_events_draws_words_evenly_whatever_the_clip_counts():
    # Three clips of a confusable for every filler clip, as confusable_repeats = 3 makes them.
    clips = [builder.SourceClip(Path(f"k{i}"), "yes", "keyword") for i in range(50)]
    clips += [builder.SourceClip(Path(f"s{i}"), "so", "confusable") for i in range(90)]
    clips += [builder.SourceClip(Path(f"b{i}"), "bed", "filler") for i in range(30)]
    clips += [builder.SourceClip(Path(f"c{i}"), "cat", "filler") for i in range(30)]
    rng = np.random.default_rng(0)
    chosen = builder.choose_events(clips, 240.0, 0.25, 2.0, rng)
    words = Counter(c.word for c in chosen)
    assert words == {"yes": 30, "so": 30, "bed": 30, "cat": 30}
    assert len({c.path for c in chosen}) == 120
    # When a word runs out the others fill its places, still without repeats.
    chosen = builder.choose_events(clips, 400.0, 0.25, 2.0, rng)
    assert Counter(c.word for c in chosen) == {"yes": 50, "so": 90, "bed": 30, "cat": 30}
    # Drawn by clip, words come as often as the data holds them.
    by_clip = Counter(
        c.kind for c in builder.choose_events(clips, 240.0, 0.25, 2.0, rng, even_words=False)
    )
    assert by_clip["confusable"] > 1.5 * by_clip["filler"]


def test_source_clips_take_one_split_only(tmp_path: Path):
    for split in ("training", "validation", "testing"):
        for speaker in speakers_for(split, 2):
            for word in ("yes", "so", "bed", "other-phrase"):
                _write(tmp_path / word / f"{speaker}_nohash_0.wav", _burst(0.2, 0.2))
    clips = builder.source_clips(tmp_path, "testing", ["yes"], 10.0, 10.0, ["so"])
    assert len(clips) == 8
    assert {c.path.name.split("_")[0] for c in clips} == set(speakers_for("testing", 2))
    kinds = {c.word: c.kind for c in clips}
    assert kinds == {"yes": "keyword", "so": "confusable", "bed": "filler", "other-phrase": "other"}


def test_label_files_read_as_audacity_writes_them(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text(
        "3.500000\t3.900000\tgo\n"
        "\\\t300.0\t3400.0\n"  # a spectral selection's frequency line
        "\n"
        "1.250000\t1.700000\t Yes \n"
        "5.000000\t5.000000\tdoor slam\n"
    )
    events = read_labels(path, ["yes", "no"], {"go": "confusable", "yes": "filler"})
    assert [(e.word, e.kind, e.start_ms, e.end_ms) for e in events] == [
        ("yes", "keyword", 1250.0, 1700.0),
        ("go", "confusable", 3500.0, 3900.0),
        ("door slam", "other", 5000.0, 5000.0),
    ]
    again = write_labels(tmp_path / "again.txt", ((e.start_ms, e.end_ms, e.word) for e in events))
    assert read_labels(again, ["yes", "no"], {"go": "confusable"}) == [
        builder.Event(e.word, e.kind, e.start_ms, e.end_ms, "again.txt") for e in events
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1.0 1.5 yes", "expected 'start<TAB>end<TAB>label'"),
        ("1.0\tsoon\tyes", "expected 'start<TAB>end<TAB>label'"),
        ("2.0\t1.5\tyes", "0 <= start <= end"),
        ("1.0\t1.5\t ", "and a name"),
    ],
)
def test_label_file_mistakes_name_the_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "bad.txt"
    path.write_text(f"0.1\t0.5\tno\n{line}\n")
    with pytest.raises(KwsError, match=f"bad.txt:2: .*{message}"):
        read_labels(path, ["yes", "no"])
    with pytest.raises(KwsError, match="cannot read the label file"):
        read_labels(tmp_path / "missing.txt", ["yes"])


def _ev(word: str, start: float, end: float) -> SimpleNamespace:
    kind = "keyword" if word in ("yes", "no") else "confusable"
    return SimpleNamespace(word=word, kind=kind, start_ms=start, end_ms=end)


def test_matching_tolerance_edges():
    events = [_ev("yes", 1000, 1500), _ev("no", 5000, 5400), _ev("go", 9000, 9300)]
    # At the start and at end + tolerance exactly: hits.
    assert match_detections([(1000, "yes")], events, ["yes", "no"], 500)["hits"] == 1
    assert match_detections([(2000, "yes")], events, ["yes", "no"], 500)["hits"] == 1
    # One millisecond late, or before the word starts: a false accept and a miss.
    late = match_detections([(2001, "yes")], events, ["yes", "no"], 500)
    assert (late["hits"], late["false_accepts"], late["misses"]) == (0, 1, 2)
    early = match_detections([(999, "yes")], events, ["yes", "no"], 500)
    assert (early["hits"], early["false_accepts"]) == (0, 1)


def test_matching_counts_duplicates_wrong_words_and_ignores_non_commands():
    events = [_ev("yes", 1000, 1500), _ev("no", 5000, 5400), _ev("go", 9000, 9300)]
    found = [
        (1200, "yes"),  # hit
        (1400, "yes"),  # second detection of the same word: false accept
        (5300, "yes"),  # yes heard on "no": false accept (and "no" is missed)
        (9100, "no"),  # "go" heard as "no"
        (12000, "no"),  # on no word at all
        (7000, "_unknown_"),  # not a command
        (7100, "_silence_"),
    ]
    counts = match_detections(found, events, ["yes", "no"], 500)
    assert counts["per_keyword"]["yes"] == {
        "occurrences": 1, "hits": 1, "misses": 0, "false_accepts": 2,
    }  # fmt: skip
    assert counts["per_keyword"]["no"] == {
        "occurrences": 1, "hits": 0, "misses": 1, "false_accepts": 2,
    }  # fmt: skip
    assert counts["false_accept_words"] == {
        "yes": {"yes": 1, "no": 1}, "no": {"go": 1, "(noise)": 1},
    }  # fmt: skip
    assert (counts["hits"], counts["misses"], counts["false_accepts"]) == (1, 1, 4)
    assert counts["false_accepts_by_kind"] == {"keyword": 2, "confusable": 1, "noise": 1}
    assert [(o["time_ms"], o["outcome"], o["word"]) for o in counts["outcomes"]] == [
        (1200, "hit", "yes"),
        (1400, "false accept", "yes"),
        (5300, "false accept", "no"),
        (9100, "false accept", "go"),
        (12000, "false accept", "(noise)"),
    ]


def test_rates_arithmetic():
    counts = {"occurrences": 40, "misses": 3, "false_accepts": 3}
    assert rates(counts, 0.5) == {"false_reject_rate": 0.075, "false_accepts_per_hour": 6.0}
    assert rates({"occurrences": 0, "misses": 0, "false_accepts": 0}, 0.0) == {
        "false_reject_rate": None,
        "false_accepts_per_hour": None,
    }
    scored = score_stream([(1100, "yes")], [_ev("yes", 1000, 1500)], ["yes"], 500, 0.25)
    assert scored["false_reject_rate"] == 0.0
    assert scored["per_keyword"]["yes"]["false_accepts_per_hour"] == 0.0
    with pytest.raises(KwsError):
        match_detections([], [], ["yes"], -1)


def _scores(pattern: list[tuple[int, int]], length: int) -> np.ndarray:
    """int8 scores: silence confident everywhere except ``(class, slots)`` runs in ``pattern``."""
    rows = np.tile(np.array([127, -128, -128, -128], np.int8), (length, 1))
    for start, (label, slots) in zip(range(10, length, 60), pattern, strict=False):
        rows[start : start + slots] = -128
        rows[start : start + slots, label] = 127
    return rows


def test_recognizer_scores_a_hand_made_stream():
    # 40 ms per inference; "yes" confident for 1 s at 0.4 s and 5.2 s, "no" for 0.2 s at 2.8 s.
    times = np.arange(200) * 40
    scores = _scores([(2, 25), (3, 5), (2, 25)], 200)
    events = [_ev("yes", 400, 1400), _ev("no", 2800, 3000), _ev("yes", 5200, 6200)]
    trace = tuning.recognizer_trace(times, scores, LABELS, RecognizerSettings())
    found = tuning.detections(trace, LABELS, 200, 1500)
    scored = score_stream(found, events, ["yes", "no"], 1000, 8.0 / 3600)
    # The long words clear the 1 s average (above 200 of 255 needs 21 of its 26 results); the
    # 0.2 s "no" does not, and an 0.8 s word would not either (20 * 255 / 26 = 196).
    assert (scored["hits"], scored["misses"], scored["false_accepts"]) == (2, 1, 0)
    assert scored["per_keyword"]["no"]["misses"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replayed_firing_equals_the_reference_recognizer(seed: int):
    rng = np.random.default_rng(seed)
    length = 400
    # Runs of one confident class with noise, so averages cross many thresholds.
    labels = np.repeat(rng.integers(0, 4, length // 20), 20)
    scores = rng.integers(-128, -60, (length, 4))
    scores[np.arange(length), labels] = rng.integers(40, 128, length)
    times = np.cumsum(rng.integers(15, 60, length))
    settings = RecognizerSettings(average_window_ms=600, suppression_ms=700, minimum_count=2)
    trace = tuning.recognizer_trace(times, scores.astype(np.int8), LABELS, settings)
    for threshold in (0, 120, 180, 200, 230, 254):
        chosen = RecognizerSettings(600, threshold, 700, 2)
        expected = [(float(t), k) for t, k, _ in recognize_stream(times, scores, LABELS, chosen)]
        assert tuning.detections(trace, LABELS, threshold, 700) == expected


def test_choose_threshold_rule():
    def row(threshold: int, frr: float, fa: float) -> dict:
        return {"threshold": threshold, "false_reject_rate": frr, "false_accepts_per_hour": fa}

    rows = [row(150, 0.02, 5.0), row(180, 0.05, 1.0), row(200, 0.05, 0.0), row(230, 0.2, 0.0)]
    best = tuning.choose_threshold(rows, 1.0)
    assert (best["threshold"], best["target_met"]) == (200, True)
    none_meet = tuning.choose_threshold([rows[0], row(160, 0.01, 3.0)], 1.0)
    assert (none_meet["threshold"], none_meet["target_met"]) == (160, False)


def test_window_times_and_int8_scores():
    times = runner.window_times_ms(52, 49, 20.0, 30.0, 2)
    assert times.tolist() == [990, 1030]
    assert runner.to_int8_scores(np.array([[1.0, 0.0, 0.5]])).tolist() == [[127, -128, 0]]


def test_stream_scores_slide_one_window_per_inference():
    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Class 1 wins exactly when the newest frame of the window is loud.
            return torch.stack([torch.zeros(len(x)), 10 * x[:, -1, :].mean(1) - 5], dim=1)

        def parameters(self, recurse: bool = True):  # predict() looks up a device
            return iter([torch.zeros(1)])

    slices = np.zeros((60, 4), np.float32)
    slices[55] = 1.0
    times, scores = runner.stream_scores(Mean(), slices, 49, 20.0, 30.0, every=1)
    assert len(times) == 12
    assert scores[:, 1].argmax() == 55 - 48
    with pytest.raises(KwsError):
        runner.stream_scores(Mean(), slices[:10], 49, 20.0, 30.0)


def test_stream_config_checks_the_gap_range():
    with pytest.raises(KwsError, match="gap_min_ms"):
        Config.from_dict({"stream": {"gap_min_ms": 3000.0, "gap_max_ms": 1000.0}})


def test_stream_stage_end_to_end_on_tiny_data(make_dataset, pm, tmp_path: Path):
    from kwscompress.models.tiny_conv import TinyConv
    from kwscompress.run import Run
    from kwscompress.stages.stream import THRESHOLDS, run_stream_stage

    root = make_dataset(per_split=3)
    config = Config.from_dict(
        {
            "features": {"name": "spectrogram"},
            "stream": {"minutes": 0.3, "keyword_share": 0.5, "gap_min_ms": 1100.0},
        }
    )
    extractor = pm.component("feature_extractor", "spectrogram")
    torch.manual_seed(0)
    model = TinyConv((49, 40), 4)
    run = Run(tmp_path / "run")
    record = run_stream_stage(config, extractor, model, root, LABELS, run)
    for key in ("false_accepts_per_hour", "false_reject_rate", "hits", "misses", "hours"):
        assert key in record
    assert record["recognizer"]["detection_threshold"] in THRESHOLDS
    assert record["recognizer"]["average_window_ms"] in (500, 750, 1000)
    best = record["streams"]["validation"]["best_per_window"]
    assert set(best) == {"500", "750", "1000"}
    testing = record["streams"]["testing"]
    assert record["hits"] + record["misses"] == testing["words"]["keyword"]
    assert sum(record["false_accepts_by_kind"].values()) == record["false_accepts"]
    # The untrained model fires all over the low thresholds: on words of every kind, and noise.
    low = testing["det"][0]
    assert sum(low["false_accepts_by_kind"].values()) == round(
        low["false_accepts_per_hour"] * record["hours"]
    )
    assert set(low["false_accepts_by_kind"]) <= {*testing["words"], "noise"}
    assert record["hours"] == pytest.approx(testing["seconds"] / 3600, abs=0.06 / 3600)
    written = (tmp_path / "run" / "stream" / "testing.json").read_text()
    assert '"events"' in written
    # Only test speakers are in the test stream.
    test_speakers = set(speakers_for("testing", 3))
    events = json.loads(written)["events"]
    assert {Path(e["file"]).name.split("_")[0] for e in events} <= test_speakers


class _FrameLevel:
    """A stand-in extractor: each 20 ms slice's peak level, in every bin."""

    name = "level"

    def extract(self, audio, config, sample_rate):
        stride, window = 320, 480
        frames = 1 + (audio.shape[1] - window) // stride
        idx = np.arange(frames)[:, None] * stride + np.arange(window)
        level = np.abs(audio[:, idx]).max(axis=2)
        return np.repeat(level[:, :, None], 2, axis=2).astype(np.float32)


def test_training_stream_examples_hold_whole_keywords_and_cut_other_words(tmp_path: Path):
    from kwscompress.config import DataConfig, FeatureConfig
    from kwscompress.stream.training import MIN_OVERLAP_MS, training_stream_examples

    # Keywords are loud (0.5), other words quiet (0.2): a slice's level says what is in it.
    for i, speaker in enumerate(speakers_for("training", 12)):
        _write(tmp_path / "yes" / f"{speaker}_nohash_0.wav", _burst(0.3, 0.3, seed=i))
        quiet = _burst(0.2, 0.5, seed=100 + i)
        _write(tmp_path / "bed" / f"{speaker}_nohash_0.wav", np.clip(quiet, -0.2, 0.2))
    for speaker in speakers_for("testing", 3):  # never in a training stream
        _write(tmp_path / "yes" / f"{speaker}_nohash_0.wav", np.full(SAMPLE_RATE, 0.9, np.float32))
    data = DataConfig(wanted_words=["yes"], augment_copies=3, background_volume=0.0)
    examples = training_stream_examples(
        tmp_path, data, FeatureConfig(bins=2), _FrameLevel(), ["_silence_", "_unknown_", "yes"], 20
    )
    assert examples is not None
    copies, count, frames, _ = examples.features.shape
    assert (copies, frames) == (3, 49) and count == len(examples.labels) == 20
    assert sorted(set(examples.labels.tolist())) == [1, 2]
    for name, label in zip(examples.files, examples.labels, strict=True):
        assert name.startswith("stream:yes/") == (label == 2)
    assert examples.words == ["yes" if label == 2 else "bed" for label in examples.labels]
    level = examples.features[..., 0]
    assert level.max() < 0.6  # no test clip was used
    loud, quiet = level > 0.4, (level > 0.1) & (level < 0.25)
    for c in range(copies):
        # A keyword window holds the whole loud part, away from both edges; other windows
        # hold no keyword and at least MIN_OVERLAP_MS of their quiet word.
        kw, other = loud[c][examples.labels == 2], loud[c][examples.labels == 1]
        # 300 ms seen through 30 ms windows every 20 ms: 15 or more slices when whole.
        assert (kw.sum(axis=1) >= 15).all(), kw.sum(axis=1)
        assert not other.any()
        assert (quiet[c][examples.labels == 1].sum(axis=1) >= MIN_OVERLAP_MS // 20 - 1).all()
    # Each copy places its windows anew.
    assert not np.array_equal(examples.features[0], examples.features[1])


def test_firmware_takes_the_recognizer_tuned_for_the_deployed_variant():
    from kwscompress.stages.deploy import recognizer_settings

    def tuned(threshold: int, misses: float) -> dict:
        return {
            "tuned": True,
            "recognizer": {"average_window_ms": 750, "detection_threshold": threshold},
            "validation_at_chosen": {"threshold": threshold, "false_reject_rate": misses},
        }

    configured = RecognizerConfig()
    results = {"stream": tuned(230, 0.4), "variants": [{"id": "float"}, {"id": "qat-8b"}]}
    settings, source = recognizer_settings(results, configured, "qat-8b")
    assert settings["detection_threshold"] == 230
    assert source == "tuned on the trained model's validation stream"
    results["variants"][1]["stream"] = tuned(190, 0.3)
    settings, source = recognizer_settings(results, configured, "qat-8b")
    assert settings["detection_threshold"] == 190
    assert source == "tuned on variant qat-8b's validation stream"
    # Another variant has no stream of its own: the trained model's settings.
    assert recognizer_settings(results, configured, "float")[0]["detection_threshold"] == 230
    # Settings that miss most keywords on validation are not flashed: the validation DET's
    # threshold with the fewest false accepts among those that keep half the keywords is.
    results["variants"][1]["stream"] = tuned(250, 0.9)
    det = [
        {"threshold": 150, "false_reject_rate": 0.2, "false_accepts_per_hour": 20.0},
        {"threshold": 170, "false_reject_rate": 0.5, "false_accepts_per_hour": 6.0},
        {"threshold": 180, "false_reject_rate": 0.45, "false_accepts_per_hour": 6.0},
        {"threshold": 200, "false_reject_rate": 0.6, "false_accepts_per_hour": 2.0},
        {"threshold": 250, "false_reject_rate": 0.9, "false_accepts_per_hour": 0.0},
    ]
    results["variants"][1]["stream"]["streams"] = {"validation": {"det": det}}
    settings, source = recognizer_settings(results, configured, "qat-8b")
    assert settings == {"average_window_ms": 750, "detection_threshold": 180}
    assert source == (
        "variant qat-8b's validation stream: threshold 180, the fewest false accepts (6.0 per "
        "hour) while missing at most half of the keywords (45%); the threshold tuned for the "
        "target missed 90%"
    )
    # When no threshold keeps half of them, the configured settings.
    for row in det:
        row["false_reject_rate"] = 0.8
    settings, source = recognizer_settings(results, configured, "qat-8b")
    assert settings["detection_threshold"] == configured.detection_threshold
    assert source.startswith("[recognizer] config (the tuned threshold missed 90%")


def test_recognizer_overrides_are_checked_and_named():
    from kwscompress.stages.deploy import override_recognizer

    tuned = {"average_window_ms": 1000, "detection_threshold": 172, "suppression_ms": 1500,
             "minimum_count": 3}  # fmt: skip
    assert override_recognizer(tuned, "tuned", None, None) == (tuned, "tuned")
    settings, source = override_recognizer(tuned, "tuned", 150, 500)
    assert settings == {**tuned, "detection_threshold": 150, "average_window_ms": 500}
    assert source == "tuned, with detection_threshold = 150, average_window_ms = 500"
    with pytest.raises(KwsError, match=r"detection_threshold must be a whole number in 0\.\.255"):
        override_recognizer(tuned, "tuned", 300, None)


def test_a_recording_suggests_the_threshold_for_the_target():
    from kwscompress.stages.recording import suggest_threshold

    det = [
        {"threshold": 150, "false_reject_rate": 0.1, "false_accepts_per_hour": 8.0},
        {"threshold": 180, "false_reject_rate": 0.2, "false_accepts_per_hour": 2.0},
        {"threshold": 200, "false_reject_rate": 0.2, "false_accepts_per_hour": 0.0},
        {"threshold": 230, "false_reject_rate": 0.6, "false_accepts_per_hour": 0.0},
    ]
    # Keywords said: the fewest misses within the rate, the higher threshold on a tie.
    assert suggest_threshold(det, 1.0, labelled=True) == {
        "target_false_accepts_per_hour": 1.0, "threshold": 200, "false_reject_rate": 0.2,
        "false_accepts_per_hour": 0.0, "target_met": True,
    }  # fmt: skip
    assert suggest_threshold(det, 0.0, labelled=True)["threshold"] == 200
    # No keyword said: the most sensitive threshold the room allows.
    unlabelled = [{**row, "false_reject_rate": None} for row in det]
    assert suggest_threshold(unlabelled, 2.0, labelled=False)["threshold"] == 180
    assert suggest_threshold(unlabelled, 10.0, labelled=False)["threshold"] == 150
    louder = [{**row, "false_accepts_per_hour": 5.0} for row in unlabelled]
    assert suggest_threshold(louder, 1.0, labelled=False) == {
        "target_false_accepts_per_hour": 1.0, "threshold": None, "false_reject_rate": None,
        "false_accepts_per_hour": None, "target_met": None,
    }  # fmt: skip


def test_the_recording_summary_says_what_was_heard_and_what_to_flash():
    from kwscompress.stages.recording import summary_lines

    record = {
        "recording": "kitchen.wav", "seconds": 600.0, "conversions": ["2 channels mixed to mono"],
        "variant": "qat-8b", "recognizer_source": "tuned",
        "recognizer": {"average_window_ms": 750, "detection_threshold": 190},
        "words": {"keyword": 20, "filler": 4}, "hits": 18, "misses": 2,
        "false_reject_rate": 0.1, "false_accepts": 1, "false_accepts_per_hour": 6.0,
        "false_accept_words": {"yes": {"yeah": 1}, "no": {}},
        "suggested": {"target_false_accepts_per_hour": 1.0, "threshold": 205,
                      "false_reject_rate": 0.25, "target_met": True},
    }  # fmt: skip
    lines = summary_lines(record, "runs/demo")
    assert lines[:3] == [
        "recording: kitchen.wav (10.0 min)",
        "  2 channels mixed to mono",
        "variant qat-8b: 750 ms average, threshold 190 (tuned)",
    ]
    assert "  keywords: 18 heard, 2 missed of 20 (10.0% false rejects)" in lines
    assert "  false accepts: 1 (6.0 per hour)" in lines and "    yes heard on: yeah x1" in lines
    assert lines[-1] == (
        "  for at most 1 false accepts per hour here: threshold 205 at 750 ms, missing 25.0% "
        "(`kwscompress deploy runs/demo --variant qat-8b --threshold 205 --window-ms 750` "
        "renders it)"
    )
    record["suggested"]["false_reject_rate"] = 1.0
    assert "no threshold hears a labelled keyword" in summary_lines(record, "r")[-1]
    record["words"] = {}
    assert "  no keyword labelled: every detection is a false accept" in summary_lines(record, "r")
    record["suggested"] = {"target_false_accepts_per_hour": 1.0, "threshold": None}
    assert "no threshold keeps this recording at 1 false" in summary_lines(record, "r")[-1]


def test_tflite_scorer_gives_the_exported_models_int8_output(tmp_path: Path):
    from kwscompress.models.tiny_conv import TinyConv
    from kwscompress.protocols import ExportInputs
    from kwscompress.stream.runner import tflite_scorer
    from kwscompress_tflite.interpreters import quantize_input, read_model, run_tflite
    from kwscompress_tflite.tflite_exporter import TfliteExporter

    torch.manual_seed(0)
    model = TinyConv((49, 40), 4, channels=4).eval()
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 26, (60, 49, 40)).astype(np.float32)
    record = TfliteExporter().export(
        ExportInputs(
            variant_id="float", model=model, weight_bits=32, labels=LABELS,
            input_shape=(49, 40), representative=features[:40], test_features=features[40:],
            test_labels=np.zeros(20, np.int64),
        ),
        tmp_path,
    )  # fmt: skip
    path = tmp_path / record["files"]["tflite"]
    scores = tflite_scorer(path)(features)
    assert scores.dtype == np.int8 and scores.shape == (60, 4)
    tflite = path.read_bytes()
    expected = run_tflite(tflite, quantize_input(features, read_model(tflite)), False)
    np.testing.assert_array_equal(scores, expected)
    # The float model it came from ranks the windows' classes the same way, nearly always.
    floats = runner.torch_scorer(model)(features)
    assert (floats.argmax(axis=1) == scores.argmax(axis=1)).mean() >= 0.9
