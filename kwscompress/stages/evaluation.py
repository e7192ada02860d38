"""The evaluate stage: per-class accuracy per split, held-out voices, the real reference clips."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import torch

from kwscompress.config import DataConfig, FeatureConfig
from kwscompress.data.audio import read_clip
from kwscompress.data.dataset import SILENCE_LABEL, UNKNOWN_LABEL
from kwscompress.data.splits import SPLITS, speaker_of
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
) -> dict[str, Any]:
    """Evaluate on every split (training on its first augmented copy) and on real clips."""
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
    }
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
