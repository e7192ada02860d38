"""DET curves over the detection threshold, and the threshold for a target false-accept rate.

The recognizer (:class:`kwscompress.recognizer.RecognizeCommands`) decides in two parts: the
averaged scores and their top class (rules 1-6 of :mod:`kwscompress.recognizer`) do not depend
on the threshold or on what fired before; only the firing decision (rule 7) does. So the
reference recognizer runs once per stream with a threshold nothing can exceed
(:func:`recognizer_trace`, which records each call's top class and average), and
:func:`fire` replays rule 7 over that trace for each threshold of the sweep in a fraction of the
time. A test checks that the replay fires exactly what :func:`~kwscompress.recognizer.
recognize_stream` fires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kwscompress.recognizer import RecognizeCommands, RecognizerSettings
from kwscompress.stream.metrics import score_stream

NEVER = 255
"""A threshold no average (0..255) exceeds: the trace pass never fires."""


@dataclass
class Trace:
    """What the recognizer computed on each call of a stream, before deciding to fire."""

    times_ms: np.ndarray
    top: np.ndarray
    """Index of the class with the highest average (0 when there was too little evidence)."""
    score: np.ndarray
    """That average, 0..255 (0 when there was too little evidence)."""


def recognizer_trace(
    times_ms: np.ndarray,
    int8_scores: np.ndarray,
    labels: Sequence[str],
    settings: RecognizerSettings,
) -> Trace:
    """Run the reference recognizer over a score sequence and record each call's top class."""
    quiet = RecognizerSettings(
        average_window_ms=settings.average_window_ms,
        detection_threshold=NEVER,
        suppression_ms=settings.suppression_ms,
        minimum_count=settings.minimum_count,
    )
    results = RecognizeCommands(labels, quiet).process_all(times_ms, int8_scores)
    index = {label: i for i, label in enumerate(labels)}
    top = np.array([index[r.label] for r in results], np.int64)
    score = np.array([r.score for r in results], np.int64)
    return Trace(np.asarray(times_ms, np.int64), top, score)


def fire(trace: Trace, threshold: int, suppression_ms: int) -> list[tuple[int, int]]:
    """Rule 7 of the recognizer over a trace: ``(time_ms, class index)`` of each firing.

    The calls whose average clears the threshold fall into runs of one top class. Silence is
    never suppressed, so every call of a silence run fires. Any other run fires at its first
    call (the class differs from the last firing's) and then at the first call more than
    ``suppression_ms`` after its last firing, so the replay jumps from firing to firing instead
    of visiting every call: a half-hour stream has tens of thousands of them per threshold.
    """
    above = np.flatnonzero(trace.score > threshold)
    if above.size == 0:
        return []
    top, times = trace.top[above].astype(np.int64), trace.times_ms[above]
    starts = np.flatnonzero(np.r_[True, top[1:] != top[:-1]]).tolist()
    fired: list[int] = []
    for start, end in zip(starts, [*starts[1:], len(above)], strict=True):
        if top[start] == 0:
            fired.extend(range(start, end))
            continue
        i = start
        while i < end:
            fired.append(i)
            i = int(np.searchsorted(times, times[i] + suppression_ms, side="right"))
    return [(int(times[i]), int(top[i])) for i in fired]


def detections(
    trace: Trace, labels: Sequence[str], threshold: int, suppression_ms: int
) -> list[tuple[float, str]]:
    """``(time_ms, label)`` of every firing at ``threshold`` (silence and unknown included)."""
    return [(float(t), labels[i]) for t, i in fire(trace, threshold, suppression_ms)]


def det_curve(
    trace: Trace,
    labels: Sequence[str],
    keywords: Sequence[str],
    events: Sequence[Any],
    hours: float,
    thresholds: Sequence[int],
    suppression_ms: int,
    tolerance_ms: float,
) -> list[dict[str, Any]]:
    """One row per threshold: overall and per-keyword false-reject rate and false accepts/hour,
    and the false accepts by the kind of word they fired on."""
    rows = []
    for threshold in thresholds:
        found = detections(trace, labels, threshold, suppression_ms)
        scored = score_stream(found, events, keywords, tolerance_ms, hours)
        rows.append(
            {
                "threshold": int(threshold),
                "false_reject_rate": scored["false_reject_rate"],
                "false_accepts_per_hour": scored["false_accepts_per_hour"],
                "false_accepts_by_kind": scored["false_accepts_by_kind"],
                "per_keyword": {
                    k: {
                        "false_reject_rate": row["false_reject_rate"],
                        "false_accepts_per_hour": row["false_accepts_per_hour"],
                    }
                    for k, row in scored["per_keyword"].items()
                },
            }
        )
    return rows


def choose_threshold(rows: Sequence[dict[str, Any]], target_per_hour: float) -> dict[str, Any]:
    """The DET row to use: fewest misses among those at or below the target rate.

    Ties go to the higher threshold (the same misses with more margin against false accepts).
    When no threshold meets the target, the one with the fewest false accepts (then fewest
    misses) is returned and ``target_met`` is False.
    """

    def frr(row: dict[str, Any]) -> float:
        return row["false_reject_rate"] if row["false_reject_rate"] is not None else 1.0

    meeting = [r for r in rows if (r["false_accepts_per_hour"] or 0.0) <= target_per_hour]
    if meeting:
        best = min(meeting, key=lambda r: (frr(r), -r["threshold"]))
        return {**best, "target_met": True}
    best = min(rows, key=lambda r: (r["false_accepts_per_hour"] or 0.0, frr(r), -r["threshold"]))
    return {**best, "target_met": False}


def quietest_keeping(
    rows: Sequence[dict[str, Any]], max_false_reject: float
) -> dict[str, Any] | None:
    """The DET row with the fewest false accepts per hour among those that miss at most
    ``max_false_reject`` of the keywords (ties: fewer misses, then the higher threshold); None
    when no row keeps that many. The mirror of :func:`choose_threshold`, for when its target
    rate costs too many keywords."""
    keeping = [
        r
        for r in rows
        if r["false_reject_rate"] is not None and r["false_reject_rate"] <= max_false_reject
    ]
    if not keeping:
        return None
    return min(
        keeping,
        key=lambda r: (r["false_accepts_per_hour"] or 0.0, r["false_reject_rate"], -r["threshold"]),
    )
