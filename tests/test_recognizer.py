"""The Python reference recognizer against score sequences worked out by hand.

Scores are written as probabilities p in 0..255 per label; the model's int8 output is p - 128.
Every expected answer below was computed by hand from the rules in kwscompress.recognizer
(the comments show the arithmetic), not by running the code.
"""

from __future__ import annotations

import numpy as np
import pytest

from kwscompress.config import RecognizerConfig
from kwscompress.errors import KwsError
from kwscompress.recognizer import RecognizeCommands, RecognizerSettings, recognize_stream

LABELS = ["_silence_", "_unknown_", "yes", "no"]
# A short window keeps the arithmetic small: 300 ms window (span rule: 300 // 4 = 75 ms).
SHORT = {
    "average_window_ms": 300,
    "detection_threshold": 200,
    "suppression_ms": 1000,
    "minimum_count": 3,
}


def row(**p: int) -> np.ndarray:
    """int8 scores from probabilities by label name; unnamed labels get p = 0."""
    probs = [p.get(label.strip("_"), 0) for label in LABELS]
    return np.array(probs, np.int64).astype(np.int16) - 128


def run(times: list[int], rows: list[np.ndarray], settings=SHORT) -> list[tuple[str, int, bool]]:
    recognizer = RecognizeCommands(LABELS, settings)
    return [tuple(recognizer.process(t, r)) for t, r in zip(times, rows, strict=True)]


def test_clean_keyword_fires_once_when_the_average_clears_the_threshold() -> None:
    times = list(range(0, 1100, 100))
    rows = [row(silence=100)] * 2 + [row(yes=255)] * 5 + [row(silence=100)] * 4
    assert run(times, rows) == [
        ("_silence_", 0, False),  # 1 result < minimum_count
        ("_silence_", 0, False),  # 2 results
        ("yes", 85, False),  # t=0..200: yes 255//3 = 85, silence 200//3 = 66
        ("yes", 127, False),  # t=0..300: yes 510//4
        ("yes", 191, False),  # t=100..400: yes 765//4
        ("yes", 255, True),  # t=200..500: all yes, 255 > 200, differs from the start label
        ("yes", 255, False),  # same label 100 ms later: suppressed
        ("yes", 191, False),  # t=400..700
        ("yes", 127, False),  # t=500..800: yes 510//4, silence 200//4 = 50
        ("_silence_", 75, False),  # t=600..900: yes 255//4 = 63, silence 300//4 = 75
        ("_silence_", 100, False),  # t=700..1000: all silence 100, below the threshold
    ]


def test_same_keyword_within_suppression_stays_quiet_and_fires_after_it() -> None:
    times = list(range(0, 1800, 100))
    rows = [row(silence=100)] * 2 + [row(yes=255)] * 4 + [row(silence=100)] * 4
    rows += [row(yes=255)] * 8  # t=1000..1700
    fired = recognize_stream(times, np.stack(rows), LABELS, SHORT)
    # First at 500 (t=200..500 all yes). Again all yes from t=1300 on, but 1300-500 = 800,
    # 1400-500 = 900 and 1500-500 = 1000 are not > 1000 ms; 1600-500 = 1100 is.
    assert fired == [(500, "yes", 255), (1600, "yes", 255)]


def test_a_different_label_fires_inside_the_suppression_time() -> None:
    times = list(range(0, 1000, 100))
    rows = [row(silence=100)] * 2 + [row(yes=255)] * 4 + [row(no=255)] * 4
    results = run(times, rows)
    assert results[5] == ("yes", 255, True)
    assert results[6] == ("yes", 191, False)  # t=300..600: yes 765//4, no 255//4
    assert results[7] == ("yes", 127, False)  # t=400..700: a 127/127 tie goes to the lower index
    assert results[8] == ("no", 191, False)  # t=500..800
    assert results[9] == ("no", 255, True)  # 400 ms after "yes", but a new label


def test_average_equal_to_the_threshold_does_not_fire_and_one_above_does() -> None:
    times = list(range(0, 600, 100))
    at = recognize_stream(times, np.stack([row(yes=200, silence=55)] * 6), LABELS, SHORT)
    assert at == []  # 200 is not > 200
    above = recognize_stream(times, np.stack([row(yes=201, silence=54)] * 6), LABELS, SHORT)
    assert above == [(200, "yes", 201)]  # t=0..200: 3 results spanning 200 ms >= 75 ms


def test_too_few_results_or_too_short_a_span_never_fires() -> None:
    sparse = recognize_stream([0, 500, 1000, 1500], np.stack([row(yes=255)] * 4), LABELS, SHORT)
    assert sparse == []  # each older result has left the 300 ms window: always 1 result
    dense = run([0, 10, 20, 30, 80], [row(yes=255)] * 5)
    # 4 results spanning 30 ms < 300 // 4; at 80 ms the span is 80 >= 75.
    assert dense == [("_silence_", 0, False)] * 4 + [("yes", 255, True)]


def test_silence_fires_on_every_call_because_it_is_never_suppressed() -> None:
    fired = recognize_stream(
        list(range(0, 500, 100)), np.stack([row(silence=255)] * 5), LABELS, SHORT
    )
    assert fired == [(200, "_silence_", 255), (300, "_silence_", 255), (400, "_silence_", 255)]


def test_micro_speech_defaults_refire_a_held_keyword_after_1500_ms() -> None:
    times = list(range(0, 2000, 100))
    fired = recognize_stream(times, np.stack([row(yes=255)] * 20), LABELS, RecognizerConfig())
    # 300 ms: 4 results spanning 300 >= 1000 // 4. Then 1800 - 300 = 1500 is not > 1500.
    assert fired == [(300, "yes", 255), (1900, "yes", 255)]


def test_a_full_queue_drops_the_newest_result() -> None:
    recognizer = RecognizeCommands(LABELS, {**SHORT, "average_window_ms": 1000}, max_results=3)
    answers = [recognizer.process(t, row(yes=255)) for t in (0, 100, 200)]
    assert answers[-1] == ("_silence_", 0, False)  # span 200 < 1000 // 4
    # The "no" at 300 is dropped (queue full), so the three queued "yes" results fire.
    assert recognizer.process(300, row(no=255)) == ("yes", 255, True)


def test_bad_input_names_the_problem() -> None:
    recognizer = RecognizeCommands(LABELS)
    recognizer.process(100, row(yes=255))
    recognizer.process(100, row(yes=255))  # equal timestamps are accepted
    with pytest.raises(KwsError, match="time order"):
        recognizer.process(50, row(yes=255))
    with pytest.raises(KwsError, match="expected 4 scores"):
        recognizer.process(200, np.zeros(3, np.int8))
    with pytest.raises(KwsError, match="int8"):
        recognizer.process(200, np.array([0, 0, 0, 300]))
    with pytest.raises(KwsError, match="detection_threshold"):
        RecognizerSettings(detection_threshold=256)
    with pytest.raises(KwsError, match="unknown recognizer setting"):
        RecognizerSettings.from_any({"window_ms": 3})
    with pytest.raises(KwsError, match="scores"):
        recognize_stream([0, 1], np.zeros((3, 4), np.int8), LABELS)


def test_a_whole_sequence_gives_what_call_by_call_processing_gives() -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.integers(10, 60, 400))
    scores = rng.integers(-128, 128, (400, 4)).astype(np.int8)
    scores[100:140, 2] = 127  # a held keyword, so some calls fire
    settings = RecognizerSettings(average_window_ms=500, detection_threshold=150)
    one_by_one = RecognizeCommands(LABELS, settings)
    expected = [one_by_one.process(int(t), s) for t, s in zip(times, scores, strict=True)]
    assert RecognizeCommands(LABELS, settings).process_all(times, scores) == expected
    assert any(r.is_new for r in expected)
    with pytest.raises(KwsError, match="times \\[T\\] and scores"):
        RecognizeCommands(LABELS).process_all(times[:3], scores)
