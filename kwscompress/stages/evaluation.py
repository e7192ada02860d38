"""The evaluate stage: per-class accuracy per split, rejection, held-out voices, real clips.

Rejection (how well the model says "none of my words") is measured three ways:

* from the test confusion matrix (:func:`rejection_metrics`): ``_unknown_`` recall and, per
  wanted word, its false-accept rate: the share of the non-keyword test clips (``_silence_``
  and ``_unknown_``) labelled as that word;
* on every non-keyword clip of the test speakers (:func:`word_table`): what each word (each
  confusable, filler and other speech) was heard as, and the share rejected per kind;
* on altered copies of the test clips (:func:`robustness`): through a telephone band, through a
  4 kHz low-pass (an 8 kHz recording), and played 1.25 times faster.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwscompress.config import DataConfig, FeatureConfig
from kwscompress.data.audio import UnusableAudio, read_clip
from kwscompress.data.dataset import (
    BAND_LIMITS,
    SILENCE_LABEL,
    UNKNOWN_LABEL,
    band_limit,
    change_speed,
)
from kwscompress.data.splits import SPLITS, speaker_of, which_set
from kwscompress.protocols import FeatureExtractor
from kwscompress.stages.features import FeatureSets
from kwscompress.train import LabeledFeatures, evaluate, predict

REFERENCE_CLIPS = {
    "yes_1000ms.wav": "yes",
    "no_1000ms.wav": "no",
    "noise_1000ms.wav": SILENCE_LABEL,
    "silence_1000ms.wav": SILENCE_LABEL,
}
"""Real Speech Commands clips shipped with the package, and the label each should get."""


def evaluate_model(
    model: torch.nn.Module,
    sets: FeatureSets,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
    manifest: dict[str, Any] | None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Evaluate on every split (training on its first augmented copy) and on real clips.

    With the dataset ``root``, the rejection tables of every test speaker's non-keyword clips
    (:func:`word_table`) and the altered test copies (:func:`robustness`) are added.
    """
    reports = {}
    for split in SPLITS:
        labeled = sets.splits[split]
        if labeled.features.ndim == 4:
            labeled = LabeledFeatures(labeled.features[0], labeled.labels)
        reports[split] = evaluate(model, labeled, sets.labels)
    summary: dict[str, Any] = {
        "labels": sets.labels,
        "accuracy": {split: reports[split]["accuracy"] for split in SPLITS},
        "per_class": {
            split: {**reports[split]["per_class"], "total": reports[split]["total"]}
            for split in SPLITS
        },
        "confusion": {split: reports[split]["confusion"] for split in SPLITS},
        "reference_clips": reference_clips(model, extractor, features, data, sets.labels),
        "rejection": rejection_metrics(reports["testing"]["confusion"], sets.labels),
    }
    if root is not None:
        summary["rejection"]["words"] = word_table(
            model, Path(root), extractor, features, data, sets.labels, manifest
        )
        summary["robustness"] = robustness(model, sets, Path(root), extractor, features, data)
    if manifest is not None:
        summary["held_out_voices"] = held_out_voices(model, sets, manifest)
    return summary


def held_out_voices(
    model: torch.nn.Module, sets: FeatureSets, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Test accuracy on voice families never heard in training, beside the families that were."""
    speakers = {s["speaker_id"]: s for s in manifest["speakers"]}
    test = sets.splits["testing"]
    held: list[bool | None] = [
        speakers[speaker_of(path)]["held_out"] if path and speaker_of(path) in speakers else None
        for path in sets.files["testing"]
    ]
    correct = predict(model, test.features).argmax(axis=1) == test.labels
    is_held = np.array([h is True for h in held], dtype=bool)
    is_seen = np.array([h is False for h in held], dtype=bool)
    return {
        "families": manifest["held_out_families"],
        "held_out_samples": int(is_held.sum()),
        "held_out_accuracy": float(correct[is_held].mean()) if is_held.any() else None,
        "seen_samples": int(is_seen.sum()),
        "seen_accuracy": float(correct[is_seen].mean()) if is_seen.any() else None,
    }


def reference_clips(
    model: torch.nn.Module,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
    labels: list[str],
) -> dict[str, Any]:
    """Label the real clips shipped in ``kwscompress/data/reference_clips``."""
    folder = resources.files("kwscompress.data") / "reference_clips"
    num_samples = data.sample_rate * data.clip_duration_ms // 1000
    names = list(REFERENCE_CLIPS)
    with resources.as_file(folder) as path:
        audio = np.stack([read_clip(path / n, data.sample_rate, num_samples).audio for n in names])
    probabilities = predict(model, extractor.extract(audio, features, data.sample_rate))
    clips = []
    for name, scores in zip(names, probabilities, strict=True):
        expected = REFERENCE_CLIPS[name]
        expected = expected if expected in labels else UNKNOWN_LABEL
        clips.append(
            {
                "file": name,
                "expected": expected,
                "predicted": labels[int(scores.argmax())],
                "scores": {label: float(p) for label, p in zip(labels, scores, strict=True)},
            }
        )
    return {"clips": clips, "all_correct": all(c["expected"] == c["predicted"] for c in clips)}


FAST_SPEED = 1.25
"""Speed factor of the fast-speech test copy."""


def rejection_metrics(confusion: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """``_unknown_`` recall and each wanted word's false-accept rate from a confusion matrix.

    ``confusion[t][p]`` counts clips of true class ``t`` predicted as ``p``; classes 0 and 1 are
    ``_silence_`` and ``_unknown_``. A rate with no clip to measure it on is None.
    """
    matrix = np.asarray(confusion, dtype=np.int64)
    unknown = matrix[1]
    non_keyword = matrix[:2].sum(axis=0)
    total = int(non_keyword.sum())
    return {
        "unknown_recall": float(unknown[1] / unknown.sum()) if unknown.sum() else None,
        "non_keyword_clips": total,
        "false_accept_rate": {
            labels[i]: (float(non_keyword[i] / total) if total else None)
            for i in range(2, len(labels))
        },
    }


def word_table(
    model: torch.nn.Module,
    root: Path,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
    labels: list[str],
    manifest: dict[str, Any] | None,
    split: str = "testing",
) -> dict[str, Any]:
    """What each non-keyword word of ``split``'s speakers was heard as, and the share rejected.

    Every clip of every word folder other than the wanted words is scored (not only the
    ``_unknown_`` clips the split sampled). A word's ``kind`` is ``confusable`` (the synthetic
    set's rule for some wanted word), ``other`` (phrases, fragments, non-words) or ``filler``.
    """
    confusable_of: dict[str, list[str]] = {}
    for wanted, words in ((manifest or {}).get("words", {}).get("confusables", {})).items():
        for word in words:
            confusable_of.setdefault(word, []).append(wanted)
    paths, words = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")) or folder.name in data.wanted_words:
            continue
        for path in sorted(folder.glob("*.wav")):
            if which_set(path.name, data.validation_percentage, data.testing_percentage) == split:
                paths.append(path)
                words.append(folder.name)
    predicted = _predict_files(model, paths, extractor, features, data)
    table: dict[str, dict[str, Any]] = {}
    for word, label in zip(words, predicted, strict=True):
        if label is None:
            continue
        kind = (
            "confusable"
            if word in confusable_of
            else "other"
            if word.startswith("other-")
            else "filler"
        )
        row = table.setdefault(
            word,
            {
                "kind": kind,
                "confusable_of": confusable_of.get(word, []),
                "clips": 0,
                "heard_as": {},
            },
        )
        row["clips"] += 1
        row["heard_as"][labels[label]] = row["heard_as"].get(labels[label], 0) + 1
    kinds: dict[str, dict[str, int]] = {}
    for row in table.values():
        rejected = sum(row["heard_as"].get(x, 0) for x in (SILENCE_LABEL, UNKNOWN_LABEL))
        row["rejected"] = rejected / row["clips"]
        total = kinds.setdefault(row["kind"], {"clips": 0, "rejected": 0})
        total["clips"] += row["clips"]
        total["rejected"] += rejected
    return {
        "split": split,
        "by_kind": {
            kind: {**c, "rejection_rate": c["rejected"] / c["clips"]} for kind, c in kinds.items()
        },
        "words": dict(sorted(table.items(), key=lambda item: item[1]["rejected"])),
    }


def robustness(
    model: torch.nn.Module,
    sets: FeatureSets,
    root: Path,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
) -> dict[str, Any]:
    """Accuracy on altered copies of the test clips (silence clips left out: they have no file).

    Copies: ``clean`` (as recorded), ``telephone`` (300-3400 Hz), ``lowpass4k`` (an 8 kHz
    recording) and ``fast`` (:data:`FAST_SPEED` times faster, tempo and pitch).
    """
    files = sets.files["testing"]
    keep = [i for i, name in enumerate(files) if name]
    labels = sets.splits["testing"].labels[keep]
    num_samples = data.sample_rate * data.clip_duration_ms // 1000
    audio = np.stack(
        [read_clip(root / files[i], data.sample_rate, num_samples).audio for i in keep]
    )
    copies = {"clean": audio}
    for kind in BAND_LIMITS:
        copies[kind] = np.stack([band_limit(clip, kind, data.sample_rate) for clip in audio])
    copies["fast"] = np.stack([change_speed(clip, FAST_SPEED) for clip in audio])
    out: dict[str, Any] = {"clips": len(keep)}
    for name, clips in copies.items():
        scores = predict(
            model, extractor.extract(np.clip(clips, -1, 1), features, data.sample_rate)
        )
        predicted = scores.argmax(axis=1)
        per_class = {}
        for index, label in enumerate(sets.labels):
            mask = labels == index
            if mask.any():
                per_class[label] = float((predicted[mask] == index).mean())
        out[name] = {"accuracy": float((predicted == labels).mean()), "per_class": per_class}
    return out


def _predict_files(
    model: torch.nn.Module,
    paths: list[Path],
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
) -> list[int | None]:
    """The predicted class of each file (None for a file that cannot be read)."""
    num_samples = data.sample_rate * data.clip_duration_ms // 1000
    audio, readable = [], []
    for path in paths:
        try:
            audio.append(read_clip(path, data.sample_rate, num_samples).audio)
            readable.append(True)
        except UnusableAudio:
            readable.append(False)
    if not audio:
        return [None] * len(paths)
    scores = predict(model, extractor.extract(np.stack(audio), features, data.sample_rate))
    found = iter(scores.argmax(axis=1).tolist())
    return [next(found) if ok else None for ok in readable]
