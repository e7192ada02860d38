"""Scoring detections against the words of a stream: hits, misses, false accepts.

The matching rule
    A detection of keyword ``k`` at time ``t`` (ms) is a **hit** of the earliest not yet matched
    occurrence of ``k`` with ``start_ms <= t <= end_ms + tolerance_ms``: the recognizer may fire
    while the word is being said or up to ``tolerance_ms`` after it ends, never before it starts.
    Every other keyword detection is a **false accept** of its label: one far from any occurrence
    of that keyword, one on another word (a confusable, a filler, the other keyword), and a second
    detection of an occurrence already matched. An occurrence with no hit is a **miss**.
    Detections of ``_silence_`` and ``_unknown_`` are not commands and are ignored.

``false_reject_rate = misses / occurrences`` and ``false_accepts_per_hour = false accepts /
stream hours``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kwscompress.errors import KwsError


def match_detections(
    detections: Sequence[tuple[float, str]],
    events: Sequence[Any],
    keywords: Sequence[str],
    tolerance_ms: float,
) -> dict[str, Any]:
    """Apply the matching rule (module docstring).

    :param detections: ``(time_ms, label)`` of every command the recognizer fired, any order.
    :param events: the stream's words (objects with ``word``, ``kind``, ``start_ms``,
        ``end_ms``, as :class:`kwscompress.stream.builder.Event`).
    :param keywords: the wanted words; other labels' detections are ignored.
    :returns: ``{"per_keyword": {k: {"occurrences", "hits", "misses", "false_accepts"}},
        "false_accept_words": {k: {word heard as k: count}}, "hits", "misses",
        "false_accepts", "occurrences", "false_accepts_by_kind", "outcomes"}``:
        ``false_accepts_by_kind`` counts them by the kind of word they fired on (the events'
        ``kind``: ``confusable``, ``filler``, ``other``, ``keyword`` for the other keyword or
        a second detection; ``noise`` off any word); ``outcomes`` lists each keyword
        detection in time order as ``{"time_ms", "label", "outcome", "word"}``: ``hit`` or
        ``false accept``, and the word it was matched to or fired on.
    """
    if tolerance_ms < 0:
        raise KwsError(f"stream.tolerance_ms must be 0 or more, got {tolerance_ms}")
    per_keyword = {
        k: {"occurrences": 0, "hits": 0, "misses": 0, "false_accepts": 0} for k in keywords
    }
    heard_as: dict[str, dict[str, int]] = {k: {} for k in keywords}
    occurrences = {
        k: sorted((e for e in events if e.word == k), key=lambda e: e.start_ms) for k in keywords
    }
    matched: dict[str, set[int]] = {k: set() for k in keywords}
    outcomes = []
    by_kind: dict[str, int] = {}
    for keyword, found in occurrences.items():
        per_keyword[keyword]["occurrences"] = len(found)
    for time_ms, label in sorted(detections):
        if label not in per_keyword:
            continue
        hit = next(
            (
                i
                for i, e in enumerate(occurrences[label])
                if i not in matched[label] and e.start_ms <= time_ms <= e.end_ms + tolerance_ms
            ),
            None,
        )
        if hit is not None:
            matched[label].add(hit)
            per_keyword[label]["hits"] += 1
            outcomes.append({"time_ms": time_ms, "label": label, "outcome": "hit", "word": label})
            continue
        per_keyword[label]["false_accepts"] += 1
        word, kind = _word_at(events, time_ms, tolerance_ms)
        heard_as[label][word] = heard_as[label].get(word, 0) + 1
        by_kind[kind] = by_kind.get(kind, 0) + 1
        outcomes.append(
            {"time_ms": time_ms, "label": label, "outcome": "false accept", "word": word}
        )
    for row in per_keyword.values():
        row["misses"] = row["occurrences"] - row["hits"]
    totals = {
        key: sum(row[key] for row in per_keyword.values())
        for key in ("occurrences", "hits", "misses", "false_accepts")
    }
    return {
        "per_keyword": per_keyword,
        "false_accept_words": heard_as,
        "false_accepts_by_kind": by_kind,
        **totals,
        "outcomes": outcomes,
    }


def _word_at(events: Sequence[Any], time_ms: float, tolerance_ms: float) -> tuple[str, str]:
    """The word a false accept fired on and its kind (``confusable``, ``filler``, ...; the
    latest word that it may belong to), else ``(noise)``."""
    near = [e for e in events if e.start_ms <= time_ms <= e.end_ms + tolerance_ms]
    if not near:
        return "(noise)", "noise"
    event = max(near, key=lambda e: e.start_ms)
    return event.word, event.kind


def rates(counts: dict[str, Any], hours: float) -> dict[str, float | None]:
    """``false_reject_rate`` and ``false_accepts_per_hour`` of :func:`match_detections` counts.

    The rate is None when it is undefined (no occurrence, or a stream of no length).
    """
    if hours < 0:
        raise KwsError(f"a stream cannot last {hours} hours")
    occurrences = counts["occurrences"]
    return {
        "false_reject_rate": counts["misses"] / occurrences if occurrences else None,
        "false_accepts_per_hour": counts["false_accepts"] / hours if hours > 0 else None,
    }


def score_stream(
    detections: Sequence[tuple[float, str]],
    events: Sequence[Any],
    keywords: Sequence[str],
    tolerance_ms: float,
    hours: float,
) -> dict[str, Any]:
    """Counts and rates, overall and per keyword: the ``stream`` record's figures."""
    counts = match_detections(detections, events, keywords, tolerance_ms)
    per_keyword = {k: {**row, **rates(row, hours)} for k, row in counts["per_keyword"].items()}
    return {**counts, **rates(counts, hours), "per_keyword": per_keyword, "hours": hours}
