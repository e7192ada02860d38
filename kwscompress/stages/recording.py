"""A run's deployed model and recognizer on a recording of your own: ``kwscompress stream``.

The synthetic streams (:mod:`kwscompress.stages.stream`) are the project's test; what matters on
the device is the room it listens to. This scores any recording the way the stream stage scores
its streams and the board runs: one frontend pass over the whole recording, the variant's
``.tflite`` file (the bytes its firmware embeds, as TensorFlow Lite's int8 kernels run it) on a
window after every ``[stream] slices_per_inference`` new slices, then the reference recognizer
with the settings the firmware renders (or others given). With a label file of the words said
in it (Audacity's format, :mod:`kwscompress.stream.labels`) keyword detections are matched to
the labelled keywords by the stream stage's rule; without one the recording is taken to hold no
keyword, so every detection is a false accept: an hour of television or of an office gives the
false accepts per hour of that room.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.config import Config
from kwscompress.data.audio import UnusableAudio, read_clip
from kwscompress.errors import KwsError
from kwscompress.plugins import PluginManager, get_plugin_manager
from kwscompress.progress import progress_bar
from kwscompress.recognizer import RecognizerSettings
from kwscompress.report.render import load_run
from kwscompress.report.sections import run_config
from kwscompress.run import write_json
from kwscompress.stages.deploy import firmware_inputs
from kwscompress.stages.stream import featurize_stream, score_at, score_built_stream
from kwscompress.stream import runner
from kwscompress.stream.builder import Stream
from kwscompress.stream.labels import read_labels
from kwscompress.stream.tuning import choose_threshold


def score_recording(
    run_dir: str | Path,
    audio_path: str | Path,
    labels_path: str | Path | None = None,
    variant: str | None = None,
    threshold: int | None = None,
    window_ms: int | None = None,
    out: str | Path | None = None,
    plugin_manager: PluginManager | None = None,
    target_per_hour: float | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run a variant of a run over a recording with the command recognizer and score it.

    :param run_dir: a run directory whose ``variant`` has a verified TFLite export.
    :param audio_path: the recording (any format libsndfile reads; mixed to mono and resampled
        to the run's sample rate, which the record's ``conversions`` note).
    :param labels_path: an Audacity label file of the words said in it; None when it holds no
        keyword.
    :param variant: the variant id; by default the first of the run's ``[deploy] variants``.
    :param threshold: detection threshold (0..255) instead of the firmware's.
    :param window_ms: averaging window instead of the firmware's.
    :param out: where to write the record; by default
        ``<run>/stream/recordings/<recording>.<variant>.json``.
    :param target_per_hour: the false-accept rate the record's ``suggested`` threshold is for;
        by default the run's ``[stream] target_false_accepts_per_hour``.
    :returns: the record (hits, misses, false accepts, rates, every detection's outcome, a DET
        over the thresholds at the averaging window and the ``suggested`` threshold for this
        recording, :func:`suggest_threshold`) and where it was written.
    :raises KwsError: no such run or variant, an unreadable recording or label file, a label
        past the recording's end, a recording shorter than one model window.
    """
    started = time.perf_counter()
    run = load_run(run_dir)
    config = run_config(run.results)
    variant = variant or (config.deploy.variants or ["float"])[0]
    inputs = firmware_inputs(
        run.results, run.path, variant, config.recognizer, threshold, window_ms
    )
    settings = RecognizerSettings.from_any(inputs.recognizer)
    keywords = list(inputs.labels[2:])
    words = ((run.results.get("evaluate") or {}).get("rejection") or {}).get("words") or {}
    kinds = {word: row.get("kind", "other") for word, row in (words.get("words") or {}).items()}
    stream, conversions = _read_recording(Path(audio_path), labels_path, keywords, kinds, config)
    pm = plugin_manager or get_plugin_manager()
    extractor = pm.component("feature_extractor", config.features.name)
    built = featurize_stream(config, extractor, stream)
    tflite = runner.tflite_scorer(inputs.tflite_path)
    with progress_bar("Scoring the recording", _windows(len(built.slices), config)) as advance:

        def scorer(windows: np.ndarray) -> np.ndarray:
            scores = tflite(windows)
            advance(len(windows))
            return scores

        entry = score_built_stream(
            config, scorer, built, inputs.labels, [settings.average_window_ms], settings
        )
    scored = score_at(entry, inputs.labels, keywords, settings, config.stream.tolerance_ms)
    counts = ("hits", "misses", "false_accepts", "false_accepts_per_hour", "false_reject_rate")
    record = {
        "recording": str(audio_path),
        "labels": None if labels_path is None else str(labels_path),
        "conversions": conversions,
        "seconds": round(stream.seconds, 3),
        "hours": entry["hours"],
        "variant": variant,
        "tflite": str(inputs.tflite_path),
        "recognizer": settings.as_dict(),
        "recognizer_source": inputs.recognizer_source,
        "words": dict(Counter(e.kind for e in stream.events)),
        **{key: scored[key] for key in counts},
        "per_keyword": scored["per_keyword"],
        "false_accept_words": scored["false_accept_words"],
        "false_accepts_by_kind": scored["false_accepts_by_kind"],
        "detections": scored["outcomes"],
        "det": entry["dets"][settings.average_window_ms],
        "suggested": suggest_threshold(
            entry["dets"][settings.average_window_ms],
            config.stream.target_false_accepts_per_hour
            if target_per_hour is None
            else target_per_hour,
            labelled=any(e.kind == "keyword" for e in stream.events),
        ),
        "matching": {"tolerance_ms": config.stream.tolerance_ms},
        "slices_per_inference": config.stream.slices_per_inference,
        "seconds_taken": round(time.perf_counter() - started, 3),
    }
    target = (
        Path(out)
        if out
        else run.path / "stream" / "recordings" / f"{Path(audio_path).stem}.{variant}.json"
    )
    write_json(target, record)
    return record, target


def summary_lines(record: dict[str, Any], run_dir: str | Path) -> list[str]:
    """What ``kwscompress stream`` prints of a record of :func:`score_recording`."""
    settings = record["recognizer"]
    window = settings["average_window_ms"]
    lines = [f"recording: {record['recording']} ({record['seconds'] / 60:.1f} min)"]
    lines += [f"  {note}" for note in record["conversions"]]
    lines.append(
        f"variant {record['variant']}: {window} ms average, threshold "
        f"{settings['detection_threshold']} ({record['recognizer_source']})"
    )
    said = record["words"].get("keyword", 0)
    if said:
        lines.append(
            f"  keywords: {record['hits']} heard, {record['misses']} missed of {said} "
            f"({record['false_reject_rate']:.1%} false rejects)"
        )
    else:
        lines.append("  no keyword labelled: every detection is a false accept")
    lines.append(
        f"  false accepts: {record['false_accepts']} "
        f"({record['false_accepts_per_hour']:.1f} per hour)"
    )
    for keyword, heard in record["false_accept_words"].items():
        if heard:
            on = ", ".join(f"{word} x{n}" for word, n in sorted(heard.items()))
            lines.append(f"    {keyword} heard on: {on}")
    suggested = record["suggested"]
    target = suggested["target_false_accepts_per_hour"]
    if suggested["threshold"] is None:
        lines.append(f"  no threshold keeps this recording at {target:g} false accepts per hour")
        return lines
    misses = suggested["false_reject_rate"]
    if said and misses >= 1.0:
        lines.append(
            f"  no threshold hears a labelled keyword at {target:g} false accepts per hour"
        )
        return lines
    lines.append(
        f"  for at most {target:g} false accepts per hour"
        f"{'' if suggested['target_met'] else ' (not reached: the fewest)'} here: threshold "
        f"{suggested['threshold']} at {window} ms"
        + (f", missing {misses:.1%}" if said else "")
        + f" (`kwscompress deploy {run_dir} --variant {record['variant']} --threshold "
        f"{suggested['threshold']} --window-ms {window}` renders it)"
    )
    return lines


def suggest_threshold(
    det: list[dict[str, Any]], target_per_hour: float, labelled: bool
) -> dict[str, Any]:
    """The threshold this recording argues for, at its averaging window.

    With keywords labelled, the one with the fewest misses at or below ``target_per_hour``
    (:func:`kwscompress.stream.tuning.choose_threshold`; ``target_met`` False when none
    reaches it); without, the lowest one at or below the rate, the most sensitive this room
    allows (``threshold`` None when none is).
    """
    keys = ("threshold", "false_reject_rate", "false_accepts_per_hour", "target_met")
    if labelled:
        row = choose_threshold(det, target_per_hour)
    else:
        quiet = [r for r in det if (r["false_accepts_per_hour"] or 0.0) <= target_per_hour]
        row = {**min(quiet, key=lambda r: r["threshold"]), "target_met": True} if quiet else {}
    return {"target_false_accepts_per_hour": target_per_hour} | {key: row.get(key) for key in keys}


def _read_recording(
    path: Path,
    labels_path: str | Path | None,
    keywords: list[str],
    kinds: dict[str, str],
    config: Config,
) -> tuple[Stream, list[str]]:
    """The recording as a :class:`Stream` with its labelled words, and what reading it changed
    (resampling, mixing to mono)."""
    try:
        loaded = read_clip(path, config.data.sample_rate)
    except UnusableAudio as exc:
        raise KwsError(f"cannot use the recording {str(path)!r}: {exc}") from None
    stream = Stream(loaded.audio, config.data.sample_rate, [])
    if stream.seconds * 1000 < config.data.clip_duration_ms:
        raise KwsError(
            f"the recording {str(path)!r} lasts {stream.seconds:.2f} s, shorter than one model "
            f"window ({config.data.clip_duration_ms:g} ms)"
        )
    if labels_path is not None:
        stream.events = read_labels(Path(labels_path), keywords, kinds)
        late = [e for e in stream.events if e.end_ms > stream.seconds * 1000]
        if late:
            raise KwsError(
                f"{labels_path}: the label {late[0].word!r} ends at {late[0].end_ms / 1000:.3f} s, "
                f"after the end of {str(path)!r} ({stream.seconds:.3f} s); is it the label file "
                "of this recording?"
            )
    return stream, loaded.conversions


def _windows(slices: int, config: Config) -> int:
    """How many windows the model scores in a recording of ``slices`` slices."""
    features = config.features
    frames = runner.window_frames(
        config.data.clip_duration_ms, features.window_ms, features.stride_ms
    )
    every = config.stream.slices_per_inference
    return len(
        runner.window_times_ms(slices, frames, features.stride_ms, features.window_ms, every)
    )
