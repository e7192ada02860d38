"""The stream stage: the model and the command recognizer on long streams, as on the device.

Two streams are built (:mod:`kwscompress.stream.builder`): one from the validation speakers and
one from the test speakers. The model scores a window after every ``slices_per_inference`` new
slices (:mod:`kwscompress.stream.runner`) and the reference recognizer turns the scores into
commands. The detection threshold is swept on both streams (DET curves), for each averaging
window of ``[stream] average_windows_ms`` (and the configured one); the window and threshold
with the fewest misses at or below ``target_false_accepts_per_hour`` on the *validation* stream
are chosen (:mod:`kwscompress.stream.tuning`) and reported on the *test* stream. The chosen
recognizer settings are the record's ``recognizer``: what the firmware should run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from kwscompress.config import Config
from kwscompress.data.dataset import synth_manifest
from kwscompress.errors import DataError
from kwscompress.protocols import FeatureExtractor
from kwscompress.recognizer import RecognizerSettings
from kwscompress.run import Run, atomic_path, write_json
from kwscompress.stream import builder, runner, tuning
from kwscompress.stream import labels as stream_labels
from kwscompress.stream.metrics import score_stream

THRESHOLDS = tuple(range(100, 255, 3))
"""Detection thresholds of the DET sweep (averaged scores, 0..255)."""

STREAM_SPLITS = ("validation", "testing")

FRONTEND_CHECKS = 32
"""Keyword windows per stream compared with a fresh frontend (see
:func:`kwscompress.stream.runner.fresh_frontend_difference`)."""


@dataclass
class BuiltStream:
    """A stream (a split's, or any other) and what does not depend on the model: its features."""

    stream: builder.Stream
    slices: np.ndarray
    """Frontend features ``[slices, bins]`` of the whole stream, in one continuous pass."""
    frontend: dict[str, float | int]
    """How far its keyword windows are from the same audio featurized as a clip."""


def run_stream_stage(
    config: Config,
    extractor: FeatureExtractor,
    model: torch.nn.Module | runner.Scorer,
    root: Path,
    labels: list[str],
    run: Run | None = None,
    built: dict[str, BuiltStream] | None = None,
) -> dict[str, Any]:
    """Build the validation and test streams, run the model and recognizer, tune, score.

    :param model: the model, or a scorer of its windows (:mod:`kwscompress.stream.runner`).
    :param root: the dataset root (Speech Commands layout).
    :param labels: the model's class names in output order (wanted words from index 2).
    :param run: when given, each stream's words and detections are written to
        ``<run>/stream/<split>.json``.
    :param built: streams already built for this config and dataset, by split; the ones
        missing are built and added, so scoring another model on the same streams (a
        deployed variant) does not build them again.
    :returns: the ``stream`` record (see :doc:`/rejection`).
    :raises DataError: a split has no keyword clip to place.
    """
    started = time.perf_counter()
    stream_config = config.stream
    keywords = list(labels[2:])
    base = RecognizerSettings.from_any(config.recognizer)
    windows = sorted({base.average_window_ms, *stream_config.average_windows_ms})
    if not stream_config.tune:
        windows = [base.average_window_ms]
    built = {} if built is None else built
    for index, split in enumerate(STREAM_SPLITS):
        if split not in built:
            built[split] = _build_split(config, extractor, Path(root), split, index)
    streams = {
        split: score_built_stream(config, model, built[split], labels, windows, base)
        for split in STREAM_SPLITS
    }
    if stream_config.tune:
        # Every (window, threshold) pair of the validation stream competes.
        rows = [
            {**row, "average_window_ms": window}
            for window, det in streams["validation"]["dets"].items()
            for row in det
        ]
        chosen_row = tuning.choose_threshold(rows, stream_config.target_false_accepts_per_hour)
        window, threshold = chosen_row["average_window_ms"], chosen_row["threshold"]
    else:
        chosen_row, window, threshold = None, base.average_window_ms, base.detection_threshold
    recognizer = RecognizerSettings(window, threshold, base.suppression_ms, base.minimum_count)
    test = streams["testing"]
    at_chosen = {
        split: score_at(entry, labels, keywords, recognizer, stream_config.tolerance_ms)
        for split, entry in streams.items()
    }
    result = at_chosen["testing"]
    at_default = score_at(test, labels, keywords, base, stream_config.tolerance_ms)
    if run is not None:
        _write_detections(run, streams, at_chosen, recognizer, stream_config.save_audio)
    other_words = sum(e.kind != "keyword" for e in test["stream"].events)
    counts = ("hits", "misses", "false_accepts", "false_accepts_per_hour", "false_reject_rate")
    target = stream_config.target_false_accepts_per_hour
    return {
        "recognizer": recognizer.as_dict(),
        "hours": test["hours"],
        **{key: result[key] for key in counts},
        "per_keyword": result["per_keyword"],
        "false_accept_words": result["false_accept_words"],
        "false_accepts_by_kind": result["false_accepts_by_kind"],
        # Rates per hour scale with how dense the stream's speech is; per word they do not.
        "words_per_hour": len(test["stream"].events) / test["hours"],
        "false_accepts_per_100_other_words": 100 * result["false_accepts"] / max(1, other_words),
        "target_false_accepts_per_hour": target,
        "tuned": chosen_row is not None,
        "validation_at_chosen": _brief(chosen_row),
        "at_configured_threshold": {
            "recognizer": base.as_dict(),
            **{key: at_default[key] for key in counts},
        },
        "streams": {
            split: {
                "seconds": round(entry["stream"].seconds, 1),
                "words": _kinds(entry["stream"].events),
                "inferences": len(entry["traces"][window].times_ms),
                "fresh_frontend_difference": entry["frontend"],
                "det": entry["dets"][window],
                "best_per_window": {
                    str(w): _brief(tuning.choose_threshold(det, target))
                    for w, det in entry["dets"].items()
                },
            }
            for split, entry in streams.items()
        },
        "matching": {
            "tolerance_ms": stream_config.tolerance_ms,
            "rule": "a keyword detection is a hit of an unmatched occurrence of that keyword when "
            "start <= t <= end + tolerance; any other keyword detection is a false accept",
        },
        "slices_per_inference": stream_config.slices_per_inference,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _build_split(
    config: Config, extractor: FeatureExtractor, root: Path, split: str, index: int
) -> BuiltStream:
    """Build one split's stream and featurize it (and check it against a fresh frontend)."""
    stream_config, data = config.stream, config.data
    manifest = synth_manifest(root) or {}
    confusables = {
        w for ws in manifest.get("words", {}).get("confusables", {}).values() for w in ws
    }
    rng = np.random.default_rng([stream_config.seed, index])
    clips = builder.source_clips(
        root, split, data.wanted_words, data.validation_percentage, data.testing_percentage,
        sorted(confusables),
    )  # fmt: skip
    if not any(c.kind == "keyword" for c in clips):
        raise DataError(f"the {split} split has no clip of a wanted word to put in a stream")
    gaps = (stream_config.gap_min_ms, stream_config.gap_max_ms)
    chosen = builder.choose_events(
        clips, stream_config.minutes * 60, stream_config.keyword_share,
        builder.slot_seconds(gaps), rng,
    )  # fmt: skip
    stream = builder.build_stream(
        chosen, builder.background_recordings(root, data.sample_rate), rng, data.sample_rate, gaps,
        stream_config.background_volume, root,
    )  # fmt: skip
    return featurize_stream(config, extractor, stream)


def featurize_stream(
    config: Config, extractor: FeatureExtractor, stream: builder.Stream
) -> BuiltStream:
    """Featurize a stream in one continuous pass and check its keyword windows against a fresh
    frontend: ready for :func:`score_built_stream` (any stream, not only a split's)."""
    data, features = config.data, config.features
    frames = runner.window_frames(data.clip_duration_ms, features.window_ms, features.stride_ms)
    slices = runner.stream_features(stream.audio, extractor, features, data.sample_rate)
    # Windows ending 100 ms after each keyword: the model's view of the whole word.
    ends = [e.end_ms for e in stream.events if e.kind == "keyword"][:FRONTEND_CHECKS]
    last = np.array([int((t + 100 - features.window_ms) // features.stride_ms) for t in ends])
    frontend = runner.fresh_frontend_difference(
        stream.audio, slices, last[last < len(slices)], extractor, features, data.sample_rate,
        frames,
    )  # fmt: skip
    return BuiltStream(stream, slices, frontend)


def score_built_stream(
    config: Config,
    model: torch.nn.Module | runner.Scorer,
    built: BuiltStream,
    labels: list[str],
    windows: list[int],
    base: RecognizerSettings,
) -> dict[str, Any]:
    """Run the model over a built stream and trace the recognizer for every averaging window.

    :returns: ``stream``, ``hours``, ``frontend``, and by window ``traces`` (the recognizer's
        averaged scores) and ``dets`` (DET rows over :data:`THRESHOLDS`); :func:`score_at`
        scores one recognizer setting from it.
    """
    stream_config, features = config.stream, config.features
    frames = runner.window_frames(
        config.data.clip_duration_ms, features.window_ms, features.stride_ms
    )
    times, scores = runner.stream_scores(
        model, built.slices, frames, features.stride_ms, features.window_ms,
        stream_config.slices_per_inference,
    )  # fmt: skip
    stream = built.stream
    hours = stream.seconds / 3600
    keywords = list(labels[2:])
    traces, dets = {}, {}
    for window in windows:
        settings = RecognizerSettings(
            window, base.detection_threshold, base.suppression_ms, base.minimum_count
        )
        traces[window] = tuning.recognizer_trace(times, scores, labels, settings)
        dets[window] = tuning.det_curve(
            traces[window], labels, keywords, stream.events, hours, THRESHOLDS,
            base.suppression_ms, stream_config.tolerance_ms,
        )  # fmt: skip
    return {
        "stream": stream,
        "traces": traces,
        "hours": hours,
        "dets": dets,
        "frontend": built.frontend,
    }


def score_at(
    entry: dict[str, Any],
    labels: list[str],
    keywords: list[str],
    settings: RecognizerSettings,
    tolerance_ms: float,
) -> dict[str, Any]:
    """Hits, misses and false accepts (:func:`kwscompress.stream.metrics.score_stream`) of
    ``settings`` on a stream scored by :func:`score_built_stream`."""
    found = tuning.detections(
        entry["traces"][settings.average_window_ms], labels, settings.detection_threshold,
        settings.suppression_ms,
    )  # fmt: skip
    return score_stream(found, entry["stream"].events, keywords, tolerance_ms, entry["hours"])


def _write_detections(
    run: Run,
    streams: dict[str, dict[str, Any]],
    scored: dict[str, dict[str, Any]],
    settings: RecognizerSettings,
    save_audio: bool,
) -> None:
    """``<run>/stream/<split>.json``: the words and each detection's outcome at ``settings``
    (``scored``, by split); with ``save_audio`` also the audio, and both as Audacity label
    files (:mod:`kwscompress.stream.labels`)."""
    folder = run.subdir("stream")
    for split, entry in streams.items():
        stream, outcomes = entry["stream"], scored[split]["outcomes"]
        write_json(
            folder / f"{split}.json",
            {
                "seconds": stream.seconds,
                "recognizer": settings.as_dict(),
                "events": [e.as_dict() for e in stream.events],
                "detections": outcomes,
            },
        )
        if not save_audio:
            continue
        with atomic_path(folder / f"{split}.wav") as tmp:
            soundfile.write(
                tmp, runner.device_samples(stream.audio), stream.sample_rate, "PCM_16", format="WAV"
            )
        stream_labels.write_labels(
            folder / f"{split}.words.txt", ((e.start_ms, e.end_ms, e.word) for e in stream.events)
        )
        stream_labels.write_labels(
            folder / f"{split}.detections.txt",
            ((o["time_ms"], o["time_ms"], f"{o['label']} ({o['outcome']})") for o in outcomes),
        )


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keys = ("threshold", "false_reject_rate", "false_accepts_per_hour", "target_met")
    return {key: row[key] for key in keys if key in row} | (
        {"average_window_ms": row["average_window_ms"]} if "average_window_ms" in row else {}
    )


def _kinds(events: list[builder.Event]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts
