"""Training examples cut from a continuous stream, the way the device hears words.

A clip shows the model one whole word with a frontend started afresh. On the device the model
sees a window sliding over continuous speech: words cut at the window's edges, a word's tail
after the previous one, and a frontend whose noise estimate has been running. A model trained
on clips alone fires on those windows (on the demo's test stream, 76 of 171 other words drove
a keyword score above 200 of 255 at some window).

So the training split gets a stream of its own (built by :mod:`kwscompress.stream.builder` from
training speakers only, with the evaluation streams' default gaps and the data's background
volume), featurized in one continuous pass, and windows are cut from it:

* for a keyword, a window that holds the keyword's whole spoken part at a random place, labelled
  as the keyword;
* for any other word, a window that overlaps its spoken part by at least
  :data:`MIN_OVERLAP_MS` (whole or cut at either edge) and no keyword's, labelled ``_unknown_``.

Each augmented copy draws its own places, so the copies of one example differ as the augmented
copies of a clip do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kwscompress.config import DataConfig, FeatureConfig, StreamConfig
from kwscompress.data.dataset import UNKNOWN_LABEL
from kwscompress.protocols import FeatureExtractor
from kwscompress.stream import builder, runner

GAP_MS = (StreamConfig.gap_min_ms, StreamConfig.gap_max_ms)
"""Silence between words of the training stream (the evaluation streams' default)."""

MIN_OVERLAP_MS = 100.0
"""How much of another word a negative window holds at least."""


@dataclass
class StreamExamples:
    """Windows cut from a training stream."""

    features: np.ndarray
    """``[copies, examples, frames, bins]``."""
    labels: np.ndarray
    """``[examples]`` class indices."""
    files: list[str]
    """Per example, ``stream:`` and the clip its word was cut from."""
    words: list[str]
    """Per example, the word it holds (a keyword or the other word)."""


def training_stream_examples(
    root: Path,
    data: DataConfig,
    features: FeatureConfig,
    extractor: FeatureExtractor,
    labels: Sequence[str],
    count: int,
) -> StreamExamples | None:
    """About ``count`` windows of a stream of the training split's words.

    Keywords are half of the words when there are enough of them. Returns ``None`` when the
    training split has no keyword clip to place or ``count`` is 0.
    """
    clips = builder.source_clips(
        root, "training", data.wanted_words, data.validation_percentage,
        data.testing_percentage,
    )  # fmt: skip
    if count < 1 or not any(c.kind == "keyword" for c in clips):
        return None
    rng = np.random.default_rng([data.seed, 1])
    slot = builder.slot_seconds(GAP_MS)
    # Words as often as the training data holds them: more clips of a confusable word
    # ([data.synth] confusable_repeats) mean more training windows of it, as in the clips.
    chosen = builder.choose_events(clips, count * slot, 0.5, slot, rng, even_words=False)
    background = builder.background_recordings(root, data.sample_rate)
    stream = builder.build_stream(
        chosen, background, rng, data.sample_rate, GAP_MS, data.background_volume, root
    )
    slices = runner.stream_features(stream.audio, extractor, features, data.sample_rate)
    frames = runner.window_frames(data.clip_duration_ms, features.window_ms, features.stride_ms)
    span_ms = (frames - 1) * features.stride_ms + features.window_ms
    # Words longer than a window cannot be held whole; they are left out.
    keyword_spans = [(e.start_ms, e.end_ms) for e in stream.events if e.kind == "keyword"]
    events = [e for e in stream.events if e.end_ms - e.start_ms <= span_ms]
    copies = max(1, data.augment_copies)
    out = np.empty((copies, len(events), frames, slices.shape[1]), np.float32)
    for copy in range(copies):
        copy_rng = np.random.default_rng([data.seed, 2, copy])
        for i, event in enumerate(events):
            last = _last_slice(event, frames, features, keyword_spans, copy_rng)
            last = min(max(last, frames - 1), len(slices) - 1)
            out[copy, i] = slices[last - frames + 1 : last + 1]
    index = {label: i for i, label in enumerate(labels)}
    example_labels = np.array(
        [index[e.word if e.kind == "keyword" else UNKNOWN_LABEL] for e in events], np.int64
    )
    return StreamExamples(
        out, example_labels, [f"stream:{e.file}" for e in events], [e.word for e in events]
    )


def _last_slice(
    event: builder.Event,
    frames: int,
    features: FeatureConfig,
    keyword_spans: Sequence[tuple[float, float]],
    rng: np.random.Generator,
    tries: int = 8,
) -> int:
    """The newest slice of a window for ``event``; see the module docstring.

    Slice ``k`` covers ``[k * stride, k * stride + window]`` ms, so a window whose newest slice
    is ``last`` covers ``[(last - frames + 1) * stride, last * stride + window]``.
    """
    stride, window = features.stride_ms, features.window_ms
    if event.kind == "keyword":
        low = math.ceil((event.end_ms - window) / stride)
        high = math.floor(event.start_ms / stride) + frames - 1
        return int(rng.integers(low, max(low, high) + 1))
    low = math.ceil((event.start_ms + MIN_OVERLAP_MS - window) / stride)
    high = math.floor((event.end_ms - MIN_OVERLAP_MS) / stride) + frames - 1
    for _ in range(tries):
        last = int(rng.integers(low, max(low, high) + 1))
        begin, end = (last - frames + 1) * stride, last * stride + window
        if not any(s < end and e > begin for s, e in keyword_spans):
            return last
    # Centred on the word: with gaps longer than the window's margins, no keyword is in it.
    return (low + high) // 2
