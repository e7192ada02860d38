"""The command recognizer: smoothed, debounced keyword decisions from per-inference scores.

A keyword model scores one window of audio at a time. On the device it runs several times a
second over overlapping windows, and one spoken word produces a run of high scores. The
recognizer turns that stream into discrete commands, exactly as ``RecognizeCommands`` in TFLM's
``micro_speech`` example does. This module is the reference: the C++ recognizer in the Arduino
sketch (``firmware_templates/recognize_commands.cpp.j2``) implements the same rules, and a test
feeds both the same score sequences and checks that they fire the same commands at the same
times.

The rules, applied on every call ``process(time_ms, scores)``:

1. **Order.** Timestamps must not decrease (equal timestamps are accepted). A decreasing
   timestamp is a :class:`~kwscompress.errors.KwsError`. (micro_speech only compares with the
   oldest queued result and returns an error status; here any step back is refused.)
2. **Queue.** The int8 scores are appended to a queue of at most :data:`MAX_RESULTS` (50)
   results. When the queue is full the *new* result is dropped, as micro_speech's fixed ring
   does; at the default window that needs more than 50 inferences per second.
3. **Window.** Results older than the window are dropped: those with
   ``time < time_ms - average_window_ms`` (a result exactly ``average_window_ms`` old stays).
4. **Too little evidence.** If the queue holds fewer than ``minimum_count`` results, or the
   oldest queued result is less than ``average_window_ms // 4`` older than this one, the answer is
   the last fired label with score 0 and ``is_new = False``.
5. **Average.** Otherwise each class's score is averaged as ``sum(score + 128) // count``
   (integer division, so 0..255) over the queue.
6. **Top class.** The class with the highest average wins; ties go to the lower index, and if
   every average is 0 the winner is index 0.
7. **Fire.** The result is a new command when the top average is *strictly greater* than
   ``detection_threshold`` and either the top label differs from the last fired label, or more
   than ``suppression_ms`` (strictly) passed since the last firing. Suppression does not apply
   while the last fired label is the first label (index 0, ``_silence_``) or nothing has fired
   yet: micro_speech treats silence as "nothing heard", so a label right after silence always
   fires, and silence itself fires on every call that clears the threshold. Only a firing
   updates the "last fired" label and time.
8. **Answer.** ``(top label, top average, is_new)``.

The state starts as if the first label had fired at no time in particular (micro_speech starts
with ``previous_top_label_ = "silence"``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kwscompress.errors import KwsError

MAX_RESULTS = 50
"""Capacity of the result queue (micro_speech's ``PreviousResultsQueue::kMaxResults``)."""


@dataclass(frozen=True)
class RecognizerSettings:
    """The recognizer's four settings (the ``[recognizer]`` table; micro_speech's defaults)."""

    average_window_ms: int = 1000
    """Scores are averaged over this much past time."""
    detection_threshold: int = 200
    """An averaged score (0..255) must be above this to fire."""
    suppression_ms: int = 1500
    """After a label fires, the same label stays quiet this long."""
    minimum_count: int = 3
    """Results the window must hold before anything can fire."""

    def __post_init__(self) -> None:
        for key in ("average_window_ms", "suppression_ms", "minimum_count"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise KwsError(f"recognizer.{key} must be a whole number >= 0, got {value!r}")
        threshold = self.detection_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int)
            or not 0 <= threshold <= 255
        ):
            raise KwsError(
                f"recognizer.detection_threshold must be a whole number in 0..255, "
                f"got {threshold!r}"
            )

    @classmethod
    def from_any(
        cls, settings: RecognizerSettings | Mapping[str, Any] | Any | None
    ) -> RecognizerSettings:
        """Settings from themselves, a mapping (``FirmwareInputs.recognizer``), a config object
        with the same attributes (``RecognizerConfig``), or None (the defaults).

        :raises KwsError: an unknown key or a value out of range.
        """
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        keys = ("average_window_ms", "detection_threshold", "suppression_ms", "minimum_count")
        if isinstance(settings, Mapping):
            unknown = sorted(set(settings) - set(keys))
            if unknown:
                raise KwsError(
                    f"unknown recognizer setting(s) {', '.join(unknown)}; valid: {', '.join(keys)}"
                )
            return cls(**dict(settings))
        return cls(**{key: getattr(settings, key) for key in keys})

    def as_dict(self) -> dict[str, int]:
        """JSON-ready settings."""
        return {
            "average_window_ms": self.average_window_ms,
            "detection_threshold": self.detection_threshold,
            "suppression_ms": self.suppression_ms,
            "minimum_count": self.minimum_count,
        }


class Recognition(NamedTuple):
    """What one call of :meth:`RecognizeCommands.process` answers."""

    label: str
    score: int
    """The averaged score of ``label``, 0..255 (0 when there was too little evidence)."""
    is_new: bool
    """Whether this call fired the command."""


class RecognizeCommands:
    """micro_speech's ``RecognizeCommands`` (rules in the module docstring).

    :param labels: class names in the model's output order (index 0 plays micro_speech's
        "silence" role in rule 7).
    :param settings: recognizer settings (see :meth:`RecognizerSettings.from_any`).
    :param max_results: capacity of the result queue (rule 2).
    """

    def __init__(
        self,
        labels: Sequence[str],
        settings: RecognizerSettings | Mapping[str, Any] | Any | None = None,
        max_results: int = MAX_RESULTS,
    ):
        if len(labels) < 1:
            raise KwsError("the recognizer needs at least one label")
        self.labels = list(labels)
        self.settings = RecognizerSettings.from_any(settings)
        self.max_results = max_results
        self._queue: deque[tuple[int, tuple[int, ...]]] = deque()
        # Running per-class sums of (score + 128) over the queue: the same integers as summing
        # the queue on every call (rule 5), without the cost.
        self._totals = [0] * len(self.labels)
        self._last_time: int | None = None
        self._fired_index = 0
        self._fired_time: int | None = None

    def process(self, time_ms: int, scores: Sequence[int] | np.ndarray) -> Recognition:
        """Feed one inference's int8 scores taken at ``time_ms``; see the module docstring.

        :raises KwsError: a timestamp earlier than the previous one, or scores that are not one
            int8 value per label.
        """
        row = _int8_rows(np.asarray(scores)[None], len(self.labels))[0]
        return self._process(int(time_ms), tuple(row.tolist()))

    def process_all(
        self, times_ms: Sequence[int] | np.ndarray, int8_scores: np.ndarray
    ) -> list[Recognition]:
        """:meth:`process` for a whole sequence, checked once instead of per call.

        :raises KwsError: mismatched lengths or shapes, non-int8 scores or decreasing times.
        """
        scores = np.asarray(int8_scores)
        times = np.asarray(times_ms)
        if scores.ndim != 2 or times.ndim != 1 or len(times) != len(scores):
            raise KwsError(
                f"the recognizer needs times [T] and scores [T, classes]; got shapes "
                f"{times.shape} and {scores.shape}"
            )
        rows = _int8_rows(scores, len(self.labels)).tolist()
        return [
            self._process(int(t), tuple(row)) for t, row in zip(times.tolist(), rows, strict=True)
        ]

    def _process(self, time_ms: int, row: tuple[int, ...]) -> Recognition:
        if self._last_time is not None and time_ms < self._last_time:
            raise KwsError(
                f"recognizer results must come in time order: got {time_ms} ms after "
                f"{self._last_time} ms"
            )
        self._last_time = time_ms
        s = self.settings
        totals = self._totals
        if len(self._queue) < self.max_results:
            self._queue.append((time_ms, row))
            for index, value in enumerate(row):
                totals[index] += value + 128
        limit = time_ms - s.average_window_ms
        while self._queue and self._queue[0][0] < limit:
            for index, value in enumerate(self._queue.popleft()[1]):
                totals[index] -= value + 128
        fired_label = self.labels[self._fired_index]
        if not self._queue:  # only when a full queue dropped this result and all others aged out
            return Recognition(fired_label, 0, False)
        count = len(self._queue)
        span = time_ms - self._queue[0][0]
        if count < s.minimum_count or span < s.average_window_ms // 4:
            return Recognition(fired_label, 0, False)
        top = 0
        top_score = 0
        for index, total in enumerate(totals):
            if total // count > top_score:
                top, top_score = index, total // count
        if self._fired_index == 0 or self._fired_time is None:
            since_fired = None  # no suppression (rule 7)
        else:
            since_fired = time_ms - self._fired_time
        is_new = top_score > s.detection_threshold and (
            top != self._fired_index or since_fired is None or since_fired > s.suppression_ms
        )
        if is_new:
            self._fired_index, self._fired_time = top, time_ms
        return Recognition(self.labels[top], top_score, is_new)


def recognize_stream(
    times_ms: Sequence[int] | np.ndarray,
    int8_scores: np.ndarray,
    labels: Sequence[str],
    settings: RecognizerSettings | Mapping[str, Any] | Any | None = None,
) -> list[tuple[int, str, int]]:
    """Run a fresh recognizer over a whole score sequence; return the fired commands.

    :param times_ms: the time of each inference, non-decreasing, ``[T]``.
    :param int8_scores: the model's int8 outputs, ``[T, classes]``.
    :param labels: class names in output order.
    :param settings: recognizer settings (defaults: micro_speech's).
    :returns: ``(time_ms, label, score)`` for every call that fired, in order. Silence (index 0)
        is included when it fires; drop it if only keywords matter.
    :raises KwsError: mismatched lengths or shapes, or decreasing times.
    """
    results = RecognizeCommands(labels, settings).process_all(times_ms, int8_scores)
    times = np.asarray(times_ms).tolist()
    return [(int(t), r.label, r.score) for t, r in zip(times, results, strict=True) if r.is_new]


def _int8_rows(scores: np.ndarray, classes: int) -> np.ndarray:
    """Check ``[T, classes]`` int8-valued scores; return them as int64 (no overflow in sums)."""
    if scores.ndim != 2 or scores.shape[1] != classes:
        raise KwsError(f"expected {classes} scores (one per label), got shape {scores.shape[1:]}")
    if scores.dtype.kind not in "iu":
        raise KwsError(
            f"scores must be int8 integers (the model's output), got dtype {scores.dtype}"
        )
    if scores.size and (scores.min() < -128 or scores.max() > 127):
        raise KwsError("scores must be int8 values in -128..127 (the model's quantized output)")
    return scores.astype(np.int64)
