"""TFLM's own micro_speech model beside a trained model, on the synthetic data and on Flite (JSON).

The issue's outside checks measure the project's model against TFLM's micro_speech model
(``tests/data/micro_speech_quantized.tflite``: ``tiny_conv`` trained on the real Speech Commands,
full int8, classes ``_silence_``, ``_unknown_``, ``yes``, ``no``). This benchmark runs that model
and, with ``--checkpoint``, a trained model of the default config side by side on the same
audio, each on the clip features it was trained on (the ``micro`` extractor; TFLM's model
without the frontend warm-up, as TFLM's training scripts featurize clips, the trained model
with it; a stream runs one continuous frontend for both), on:

``synthetic``
    the default synthetic data (synthesized first when it is not cached): the test split's
    accuracy per class, ``_unknown_`` recall and the shares of confusables, fillers and other
    speech rejected (the evaluate stage's figures), and the validation and test streams as the
    stream stage scores them (at the ``[recognizer]`` settings and tuned on validation).
``flite``
    the probe clips of Flite's four voices (``bench_other_engine.probe_clips``: every wanted
    word, confusable and filler at three rates and three formant shifts; no default training
    speaker uses Flite): keywords heard right, confusables and fillers rejected, the first
    outside check's eight other words (:data:`OUTSIDE_CHECK_WORDS`) rejected, and those eight
    with the wanted words together (``outside_check_overall``).
``flite_stream``
    one stream of those clips (each at most once, every word as often as the others, on the
    synthetic data's background noise, with the ``[stream]`` gaps): the misses and false
    accepts per hour at the ``[recognizer]`` settings, at the lowest threshold, and, per
    averaging window, the fewest misses at or below each of :data:`RATES` false accepts per
    hour with the threshold chosen on this very stream (a best case for both models alike: no
    validation stream of unseen voices is left to tune on).

The outside checks used other engines, so none of these is their figure; both models are
measured here the same way. Usage::

    python benchmarks/bench_reference_model.py --checkpoint runs/demo/checkpoints/tc_ds_cnn.pt

(about 3 minutes on the 2-core reference machine with the synthetic data cached; Flite needs
``make flite``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from kwscompress import Pipeline
from kwscompress.config import Config
from kwscompress.data.dataset import SILENCE_LABEL, UNKNOWN_LABEL
from kwscompress.data.synth import flite
from kwscompress.recognizer import RecognizerSettings
from kwscompress.stages.stream import (
    BuiltStream,
    featurize_stream,
    score_at,
    score_built_stream,
)
from kwscompress.stream import builder, runner, tuning

sys.path.insert(0, str(Path(__file__).parent))
from bench_other_engine import probe_clips, score

ROOT = Path(__file__).resolve().parents[1]
MICRO_SPEECH = ROOT / "tests" / "data" / "micro_speech_quantized.tflite"

OUTSIDE_CHECK_WORDS = ("up", "down", "left", "right", "on", "off", "stop", "go")
"""The other words of the issue's first outside check."""

RATES = (1, 2, 5, 10, 20, 50, 100)
"""False accepts per hour at which the Flite stream's fewest misses are reported."""


class ScorerModule(torch.nn.Module):
    """A :data:`~kwscompress.stream.runner.Scorer` (a ``.tflite`` file's int8 scores) as a
    module whose softmax gives back the scores' probabilities, so the evaluate stage's code
    scores it as it scores a trained model."""

    def __init__(self, scorer: runner.Scorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        probabilities = (self.scorer(features.numpy()).astype(np.float32) + 128) / 256
        # A code of -128 is a probability below 1/256, not zero: keep the log finite.
        return torch.from_numpy(np.log(np.maximum(probabilities, 1 / 512)))


def synthetic(
    pipe: Pipeline, model: torch.nn.Module, scorer: torch.nn.Module | runner.Scorer
) -> dict[str, Any]:
    """Test-split and stream figures on the pipeline's data."""
    evaluation = pipe.evaluate(model=model)
    stream = pipe.stream(model=scorer)
    rejection = evaluation["rejection"]
    per_class = evaluation["per_class"]["testing"]
    counts = ("false_reject_rate", "false_accepts_per_hour")
    return {
        "test_accuracy": round(evaluation["accuracy"]["testing"], 4),
        "per_class": {c: round(v["accuracy"], 4) for c, v in per_class.items() if c != "total"},
        "unknown_recall": round(rejection["unknown_recall"], 4),
        "rejected": {
            kind: round(row["rejection_rate"], 4)
            for kind, row in rejection["words"]["by_kind"].items()
        },
        "stream_configured": _brief(stream["at_configured_threshold"], counts),
        "stream_tuned": _brief(stream, ("recognizer", *counts)),
        "stream_lowest_threshold": {
            split: _brief(entry["det"][0], ("threshold", *counts))
            for split, entry in stream["streams"].items()
        },
    }


def flite_clips(config: Config) -> dict[str, tuple[np.ndarray, list[str], list[str]]]:
    """Every Flite voice's probe clips."""
    return {voice: probe_clips(config, voice) for voice in flite.VOICES}


def flite_scores(
    pipe: Pipeline, model: torch.nn.Module, clips: dict[str, Any], labels: list[str]
) -> dict[str, Any]:
    """Shares right on every voice's probe clips, and on the outside check's words."""
    extractor = pipe.pm.component("feature_extractor", pipe.config.features.name)
    voices = {v: score(pipe.config, extractor, model, labels, c) for v, c in clips.items()}
    kinds = ("keywords", "confusables", "fillers")
    out: dict[str, Any] = {
        kind: round(float(np.mean([v[kind] for v in voices.values()])), 4) for kind in kinds
    }
    right = {"other": [0, 0], "wanted": [0, 0]}
    for found in voices.values():
        for word, heard in found["heard_as"].items():
            if word in OUTSIDE_CHECK_WORDS or word in labels[2:]:
                part = right["other" if word in OUTSIDE_CHECK_WORDS else "wanted"]
                expected = word if word in labels[2:] else UNKNOWN_LABEL
                part[0] += heard.get(expected, 0)
                part[1] += sum(heard.values())
    out["outside_check_words_rejected"] = round(right["other"][0] / right["other"][1], 4)
    both = [a + b for a, b in zip(right["other"], right["wanted"], strict=True)]
    out["outside_check_overall"] = round(both[0] / both[1], 4)
    out["per_voice"] = {v: {k: found[k] for k in kinds} for v, found in voices.items()}
    return out


def flite_stream(
    config: Config, pipe: Pipeline, clips: dict[str, Any], folder: Path
) -> builder.Stream:
    """A stream of the probe clips (each at most once) on the synthetic background noise."""
    sources = []
    for voice, (audio, words, kinds) in clips.items():
        for i, (clip, word, kind) in enumerate(zip(audio, words, kinds, strict=True)):
            path = folder / f"{voice}_{i}_{word}.wav"
            sf.write(path, clip, config.data.sample_rate, subtype="PCM_16")
            sources.append(builder.SourceClip(path, word, kind))
    stream_config = config.stream
    rng = np.random.default_rng([stream_config.seed, 2])
    gaps = (stream_config.gap_min_ms, stream_config.gap_max_ms)
    chosen = builder.choose_events(
        sources, stream_config.minutes * 60, stream_config.keyword_share,
        builder.slot_seconds(gaps), rng,
    )  # fmt: skip
    root = Path(pipe.run_record.results["data"]["root"])
    background = builder.background_recordings(root, config.data.sample_rate)
    return builder.build_stream(
        chosen, background, rng, config.data.sample_rate, gaps, stream_config.background_volume
    )


def stream_scores(
    config: Config, built: BuiltStream, model: torch.nn.Module | runner.Scorer, labels: list[str]
) -> dict[str, Any]:
    """The Flite stream's figures for one model (see the module docstring)."""
    base = RecognizerSettings.from_any(config.recognizer)
    windows = sorted({base.average_window_ms, *config.stream.average_windows_ms})
    entry = score_built_stream(config, model, built, labels, windows, base)
    counts = ("false_reject_rate", "false_accepts_per_hour")
    configured = score_at(entry, labels, labels[2:], base, config.stream.tolerance_ms)
    best = {}
    for window, det in entry["dets"].items():
        rows = {rate: tuning.choose_threshold(det, rate) for rate in RATES}
        best[str(window)] = {
            str(rate): _brief(row, ("threshold", *counts))
            for rate, row in rows.items()
            if row["target_met"]
        }
    return {
        "configured": _brief(configured, counts),
        "lowest_threshold": {
            str(w): _brief(det[0], ("threshold", *counts)) for w, det in entry["dets"].items()
        },
        "fewest_misses_at_or_below": best,
    }


def _brief(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: round(row[k], 4) if isinstance(row[k], float) else row[k] for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained model of the default config")
    parser.add_argument("--tflite", type=Path, default=MICRO_SPEECH, help="the reference model")
    args = parser.parse_args()
    config = Config()
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, *config.data.wanted_words]
    clips = flite_clips(config)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(config, run_dir=Path(tmp) / "trained")
        pipe.features()
        extractor = pipe.pm.component("feature_extractor", config.features.name)
        # TFLM's training scripts featurize each clip with a fresh frontend: so are its clips.
        fresh = config.updated({"features": {"warmup_ms": 0}})
        reference = runner.tflite_scorer(args.tflite)
        models = {
            args.tflite.stem: (
                Pipeline(fresh, run_dir=Path(tmp) / "reference"),
                ScorerModule(reference),
                reference,
            )
        }
        if args.checkpoint:
            trained = pipe.load_model(args.checkpoint)
            models[str(args.checkpoint)] = (pipe, trained, trained)
        folder = Path(tmp) / "flite"
        folder.mkdir()
        built = featurize_stream(config, extractor, flite_stream(config, pipe, clips, folder))
        kinds = Counter(event.kind for event in built.stream.events)
        for name, (own, module, scorer) in models.items():
            rows[name] = {
                "clip_features_warmup_ms": own.config.features.warmup_ms,
                "synthetic": synthetic(own, module, scorer),
                "flite": flite_scores(own, module, clips, labels),
                "flite_stream": stream_scores(config, built, scorer, labels),
            }
    stream = {"minutes": round(built.stream.seconds / 60, 1), "words": dict(kinds)}
    print(json.dumps({"flite_stream": stream, "models": rows}, indent=1))


if __name__ == "__main__":
    main()
