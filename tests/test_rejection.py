"""Rejection: the confusable rule, class balance, band-limit and speed copies, the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import SAMPLE_RATE

from kwscompress.config import Config, SynthConfig, TrainConfig
from kwscompress.data.dataset import band_limit, change_speed
from kwscompress.data.synth import builder, confusables
from kwscompress.errors import ConfigError
from kwscompress.rejection import rejection_metrics
from kwscompress.stream.builder import speech_extent
from kwscompress.train import LabeledFeatures, class_weights, predict, train_model


def test_tokens_split_espeak_phonemes():
    assert confusables.tokens("n'oU") == ("n", "oU")
    assert confusables.tokens("tS'Es") == ("tS", "E", "s")
    assert confusables.tokens("st2'0p") == ("s", "t2", "0", "p")


def test_confusables_of_no_and_yes_are_rhymes_and_neighbours():
    no = confusables.confusable_words("no", 12, exclude=["yes", "no"])
    assert {"go", "so", "low", "show", "toe", "nose"} <= set(no)
    assert "know" not in no  # a homophone would be label noise
    yes = confusables.confusable_words("yes", 12, exclude=["yes", "no"])
    assert {"yet", "less", "guess", "mess", "chess"} <= set(yes)
    assert "yes" not in yes and "no" not in yes


def test_confusable_rule_works_for_another_word_and_keeps_wanted_words_out():
    right = confusables.confusable_words("right", 8, exclude=["right", "light"])
    assert {"night", "fight", "bright"} <= set(right)
    assert "light" not in right
    for word in right:
        phones = confusables.tokens(confusables.phonemize(word))
        target = confusables.tokens(confusables.phonemize("right"))
        assert confusables.edit_distance(phones, target) <= 1 or confusables.rhyme(
            phones
        ) == confusables.rhyme(target)


def test_unknown_words_hold_fillers_confusables_and_other_speech():
    config = SynthConfig(confusables=5, confusable_repeats=2, other_speech_repeats=1)
    words = builder.unknown_words(config, ["yes", "no"])
    assert words["bed"] == config.unknown_repeats
    assert words["go"] == 2  # a filler that is also a confusable gets the larger count
    assert all(words[k] == 1 for k in confusables.OTHER_SPEECH)
    assert "yes" not in words and "no" not in words
    # A wanted word is never another wanted word's confusable.
    assert "go" not in builder.unknown_words(config, ["no", "go"])
    assert builder.planned_clip_count(config, ["yes", "no"]) == config.speakers * (
        2 * config.repeats + sum(words.values())
    )


def test_other_speech_never_sounds_like_a_wanted_word():
    rng = np.random.default_rng(0)
    target = confusables.tokens(confusables.phonemize("no"))
    for _ in range(30):
        text, keep = confusables.other_speech("other-nonword", rng, ["go"], ["no"])
        assert text.startswith("[[") and keep == 1.0
        assert confusables.edit_distance(confusables.tokens(text[2:-2]), target) > 1
    text, keep = confusables.other_speech("other-fragment", rng, ["bed"], ["no"])
    assert text == "bed" and 0.3 < keep < 0.7


def test_balanced_class_weights_make_every_class_count_the_same():
    labels = np.array([0] * 10 + [1] * 60 + [2] * 20 + [3] * 10)
    weights = class_weights(labels, 5, "balanced").numpy()
    per_class = weights[:4] * np.bincount(labels)
    assert np.allclose(per_class, per_class[0])
    assert weights[4] == 0.0  # a class with no clip
    assert class_weights(labels, 4, "none") is None
    with pytest.raises(ConfigError, match="class_weights"):
        train_model(
            torch.nn.Linear(4, 2),
            LabeledFeatures(np.zeros((2, 1, 4), np.float32), np.array([0, 1])),
            LabeledFeatures(np.zeros((2, 1, 4), np.float32), np.array([0, 1])),
            TrainConfig(class_weights="sometimes"),
            None,  # type: ignore[arg-type]
        )


def test_balanced_weights_raise_the_recall_of_a_rare_class(tmp_path):
    # Two overlapping 1-D classes, 95 % of one: plain loss sacrifices the rare one.
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.05).astype(np.int64)
    x = (rng.normal(0, 1, 2000) + 1.5 * labels).astype(np.float32).reshape(-1, 1, 1)
    data = LabeledFeatures(x, labels)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only wait on each other

    def recall(mode: str) -> float:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 2))
        config = TrainConfig(epochs=15, batch_size=100, learning_rate=0.05, class_weights=mode)
        train_model(model, data, data, config, tmp_path / f"{mode}.pt")
        with torch.no_grad():
            predicted = model(torch.from_numpy(x)).argmax(1).numpy()
        return float((predicted[labels == 1] == 1).mean())

    try:
        assert recall("balanced") > recall("none") + 0.3
    finally:
        torch.set_num_threads(threads)


def test_band_limit_removes_the_highs_and_speed_shortens_the_word():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    high = (0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    low = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    for kind in ("telephone", "lowpass4k"):
        assert band_limit(high, kind)[2000:].std() < 0.01
        assert band_limit(low, kind)[2000:].std() > 0.3
    with pytest.raises(ValueError, match="telephone"):
        band_limit(low, "radio")
    word = np.zeros(SAMPLE_RATE, np.float32)
    word[4000:12000] = low[4000:12000]
    start, end = speech_extent(change_speed(word, 1.25), SAMPLE_RATE)
    assert (end - start) == pytest.approx(8000 / 1.25, abs=330)
    assert change_speed(word, 0.8).shape == word.shape


def test_rejection_metrics_arithmetic():
    labels = ["_silence_", "_unknown_", "yes", "no"]
    confusion = [
        [9, 1, 0, 0],  # silence: one heard as unknown (still rejected)
        [2, 70, 8, 20],  # unknown: 8 heard as yes, 20 as no
        [0, 3, 45, 2],
        [0, 1, 1, 48],
    ]
    found = rejection_metrics(confusion, labels)
    assert found["unknown_recall"] == pytest.approx(0.70)
    assert found["non_keyword_clips"] == 110
    assert found["false_accept_rate"] == {
        "yes": pytest.approx(8 / 110),
        "no": pytest.approx(20 / 110),
    }
    empty = rejection_metrics([[0] * 4] * 4, labels)
    assert empty["unknown_recall"] is None and empty["false_accept_rate"]["yes"] is None


def test_speed_range_and_class_weights_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="speed_min"):
        Config.from_dict({"data": {"speed_min": 1.3, "speed_max": 1.1}})
    with pytest.raises(ConfigError, match="class_weights"):
        Config.from_dict({"train": {"class_weights": "inverse"}})


def test_report_sections_show_rejection_and_streaming(tmp_path):
    from kwscompress.report.rejection import RejectionSection, StreamingSection
    from kwscompress.run import Run

    run = Run(tmp_path / "run")
    assert RejectionSection().render(run) is None and StreamingSection().render(run) is None
    heard = {"_unknown_": 7, "no": 3}
    run.record(
        "evaluate",
        {
            "rejection": {
                "unknown_recall": 0.875,
                "false_accept_rate": {"yes": 0.02, "no": 0.0625},
                "words": {
                    "by_kind": {"confusable": {"clips": 10, "rejected": 7, "rejection_rate": 0.7}},
                    "words": {
                        "go": {"kind": "confusable", "confusable_of": ["no"], "clips": 10,
                               "heard_as": heard, "rejected": 0.7},
                    },
                },
            },
            "robustness": {"clips": 20, "fast": {"accuracy": 0.6, "per_class": {"yes": 0.5}}},
        },
    )  # fmt: skip
    det_row = {
        "threshold": 200, "false_reject_rate": 0.1, "false_accepts_per_hour": 2.0,
        "per_keyword": {"yes": {"false_reject_rate": 0.1, "false_accepts_per_hour": 2.0}},
    }  # fmt: skip
    run.record(
        "stream",
        {
            "recognizer": {"average_window_ms": 1000, "detection_threshold": 200,
                           "suppression_ms": 1500, "minimum_count": 3},
            "hours": 0.25, "hits": 27, "misses": 3, "false_accepts": 1,
            "false_accepts_per_hour": 4.0, "false_reject_rate": 0.1, "tuned": True,
            "per_keyword": {"yes": {"occurrences": 30, "hits": 27, "misses": 3,
                                    "false_accepts": 1, "false_reject_rate": 0.1,
                                    "false_accepts_per_hour": 4.0}},
            "false_accept_words": {"yes": {"yet": 1}},
            "false_accepts_by_kind": {"confusable": 1},
            "target_false_accepts_per_hour": 1.0,
            "streams": {"testing": {"seconds": 900.0, "words": {"keyword": 30}, "det": [det_row]}},
            "matching": {"tolerance_ms": 1000.0},
        },
    )  # fmt: skip
    rejection = RejectionSection().render(run)
    assert "87.5 %" in rejection.markdown and "go" in rejection.markdown
    assert "Every compression variant" not in rejection.markdown  # no sweep yet
    run.record(
        "variants",
        [
            {"id": "float", "status": "ok", "accuracy": {"testing": 0.9},
             "rejection": {"unknown_recall": 0.875,
                           "false_accept_rate": {"yes": 0.02, "no": 0.0625},
                           "words": {"by_kind": {"confusable": {"rejection_rate": 0.7}}}},
             "robustness": {"fast": {"accuracy": 0.6}},
             "held_out_voices": {"held_out_accuracy": 0.85, "seen_accuracy": 0.91}},
            {"id": "ptq-4b", "status": "ok", "accuracy": {"testing": 0.8},
             "rejection": {"unknown_recall": 0.625, "false_accept_rate": {"yes": 0.25}}},
            {"id": "ptq-2b", "status": "failed", "rejection": None},
        ],
    )  # fmt: skip
    table = RejectionSection().render(run).markdown.split("Every compression variant")[1]
    assert "| float | 90.0 % | 87.5 % | 2.0 % | 6.2 % | 70.0 % |" in table
    assert "| ptq-4b | 80.0 % | 62.5 % | 25.0 % |" in table and "ptq-2b" not in table
    assert "85.0 %" in table and "91.0 %" in table and "60.0 %" in table
    assert "1.25 times faster" in rejection.markdown
    streaming = StreamingSection().render(run)
    assert "yet 1" in streaming.markdown and "detection_threshold = 200" in streaming.markdown
    assert "The false accepts fired on: 1 confusable (" in streaming.markdown
    assert (tmp_path / "run" / "plots" / "det-curves.png").stat().st_size > 1000
    assert "misses most keywords" not in streaming.markdown
    assert "Deployed variants" not in streaming.markdown
    variant_stream = {
        "recognizer": {"average_window_ms": 750, "detection_threshold": 190},
        "false_reject_rate": 0.2, "false_accepts_per_hour": 6.0,
        "at_configured_threshold": {"false_reject_rate": 0.5, "false_accepts_per_hour": 20.0},
    }  # fmt: skip
    source = "tuned on variant qat-8b's validation stream"
    run.record(
        "variants",
        [
            {"id": "float"},
            {"id": "qat-8b", "stream": variant_stream, "deploy": {"recognizer_source": source}},
        ],
    )
    deployed = StreamingSection().render(run).markdown.split("Deployed variants")[1]
    assert "| trained model | 1000 ms, 200 | 10.0 % | 4.0 |" in deployed
    assert f"| qat-8b | 750 ms, 190 | 20.0 % | 6.0 | 50.0 % | 20.0 | {source} |" in deployed
    run.results["stream"]["false_reject_rate"] = 0.9
    (tmp_path / "run" / "plots" / "det-curves.png").unlink()
    assert "misses most keywords" in StreamingSection().render(run).markdown
    assert "Recordings" not in StreamingSection().render(run).markdown
    # What `kwscompress stream` scored shows up beside the streams, a broken record as such.
    recordings = tmp_path / "run" / "stream" / "recordings"
    recordings.mkdir(parents=True)
    (recordings / "tv.qat-8b.json").write_text(
        json.dumps(
            {
                "recording": "/home/me/tv.wav", "variant": "qat-8b", "seconds": 1800.0,
                "recognizer": {"average_window_ms": 1000, "detection_threshold": 172},
                "words": {}, "hits": 0, "false_reject_rate": None,
                "false_accepts": 3, "false_accepts_per_hour": 6.0,
            }
        )
    )  # fmt: skip
    (recordings / "half.qat-8b.json").write_text('{"recording": ')
    table = StreamingSection().render(run).markdown.split("Recordings scored")[1]
    assert "| tv.wav | qat-8b | 30.0 | 1000 ms, 172 | 0 | 0 | \N{EN DASH} | 3 | 6.0 |" in table
    assert "| half.qat-8b.json | unreadable (JSONDecodeError) |" in table
    del run.results["stream"]
    assert "tv.wav" in StreamingSection().render(run).markdown


def test_probes_cover_every_test_clip_and_score_like_the_model(make_dataset, pm):
    from kwscompress.config import DataConfig, FeatureConfig
    from kwscompress.models.tiny_conv import TinyConv
    from kwscompress.rejection import HELD_OUT, SEEN, UNKNOWN_VOICE, collect_probes, score_probes
    from kwscompress.stages.features import FeatureSets
    from kwscompress.train import LabeledFeatures

    root = make_dataset(per_split=2)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    data, features = DataConfig(), FeatureConfig(name="spectrogram")
    extractor = pm.component("feature_extractor", "spectrogram")
    torch.manual_seed(0)
    model = TinyConv((49, 40), 4)
    files = ["yes/" + p.name for p in sorted((root / "yes").glob("*.wav"))][:2]
    held, seen = (f.split("/")[1].split("_")[0] for f in files)
    manifest = {
        "words": {"confusables": {"yes": ["cat"]}},
        "speakers": [
            {"speaker_id": held, "held_out": True},
            {"speaker_id": seen, "held_out": False},
        ],
        "held_out_families": ["en-gb-x-rp"],
    }
    test = LabeledFeatures(
        extractor.extract(np.zeros((3, SAMPLE_RATE), np.float32), features, SAMPLE_RATE),
        np.array([2, 2, 0]),
    )
    empty = LabeledFeatures(np.zeros((1, 49, 40), np.float32), np.array([0]))
    sets = FeatureSets(
        labels, {"training": empty, "validation": empty, "testing": test},
        {"training": [""], "validation": [""], "testing": [*files, ""]}, {"cache_key": "k"},
    )  # fmt: skip
    probes = collect_probes(sets, extractor, features, data, manifest, root)
    assert probes.feature_key == "k"
    assert probes.voices.tolist() == [HELD_OUT, SEEN, UNKNOWN_VOICE]
    predicted = predict(model, test.features).argmax(axis=1)
    found = score_probes(model, probes, test.labels, predicted)

    table = found["rejection"]["words"]
    assert set(table["words"]) == {"cat", "dog"}  # every non-keyword folder, not the keywords
    assert table["words"]["cat"]["kind"] == "confusable"
    assert table["words"]["cat"]["confusable_of"] == ["yes"]
    assert table["words"]["dog"]["kind"] == "filler"
    assert all(
        sum(row["heard_as"].values()) == row["clips"] == 2 for row in table["words"].values()
    )
    assert table["by_kind"]["filler"]["clips"] == 2

    copies = found["robustness"]
    assert copies["clips"] == 2  # the silence clip has no file
    assert set(copies) == {"clips", "clean", "telephone", "lowpass4k", "fast"}
    # The clean copy is the test files as recorded: the model's own predictions on them.
    clean = predict(model, probes.copies["clean"]).argmax(axis=1)
    assert copies["clean"]["accuracy"] == pytest.approx(float((clean == 2).mean()))

    correct = predicted == test.labels
    voices = found["held_out_voices"]
    assert voices["families"] == ["en-gb-x-rp"]
    assert (voices["held_out_samples"], voices["seen_samples"]) == (1, 1)
    assert voices["held_out_accuracy"] == float(correct[0])
    assert voices["seen_accuracy"] == float(correct[1])
    # The rejection record's confusion is built from the predictions it was given.
    non_keyword = predicted[test.labels < 2]
    rates = found["rejection"]["false_accept_rate"]
    assert rates["yes"] == float((non_keyword == 2).mean())


def test_probes_without_files_or_manifest_give_the_confusion_metrics_only(pm):
    from kwscompress.config import DataConfig, FeatureConfig
    from kwscompress.models.tiny_conv import TinyConv
    from kwscompress.rejection import collect_probes, score_probes
    from kwscompress.stages.features import FeatureSets

    labels = ["_silence_", "_unknown_", "yes", "no"]
    test = LabeledFeatures(np.zeros((2, 49, 40), np.float32), np.array([1, 2]))
    sets = FeatureSets(
        labels, {"training": test, "validation": test, "testing": test},
        {"training": ["", ""], "validation": ["", ""], "testing": ["", ""]}, {},
    )  # fmt: skip
    extractor = pm.component("feature_extractor", "spectrogram")
    probes = collect_probes(sets, extractor, FeatureConfig(), DataConfig(), None, None)
    model = TinyConv((49, 40), 4)
    found = score_probes(model, probes, test.labels, predict(model, test.features).argmax(axis=1))
    assert set(found) == {"rejection"}
    assert found["rejection"]["non_keyword_clips"] == 1
