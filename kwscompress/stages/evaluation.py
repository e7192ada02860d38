"""The evaluate stage: per-class accuracy per split, rejection, held-out voices, real clips.

Rejection (``_unknown_`` recall, false accepts per keyword, the table of confusable and other
words, the band-limited and fast test copies) and the held-out voices come from the rejection
probes (:mod:`kwscompress.rejection`), which the compression sweep scores every variant on too.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import torch

from kwscompress.config import DataConfig, FeatureConfig
from kwscompress.data.audio import read_clip
from kwscompress.data.dataset import SILENCE_LABEL, UNKNOWN_LABEL
from kwscompress.data.splits import SPLITS
from kwscompress.protocols import FeatureExtractor
from kwscompress.rejection import RejectionProbes, score_probes
from kwscompress.stages.features import FeatureSets
from kwscompress.train import evaluate, predict

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
    probes: RejectionProbes,
) -> dict[str, Any]:
    """Evaluate on every split (training on its first augmented copy), on the rejection probes
    and on the real reference clips."""
    reports = {}
    for split in SPLITS:
        reports[split] = evaluate(model, sets.splits[split].first_copy, sets.labels)
    return {
        "labels": sets.labels,
        "accuracy": {split: reports[split]["accuracy"] for split in SPLITS},
        "per_class": {
            split: {**reports[split]["per_class"], "total": reports[split]["total"]}
            for split in SPLITS
        },
        "confusion": {split: reports[split]["confusion"] for split in SPLITS},
        "reference_clips": reference_clips(model, extractor, features, data, sets.labels),
        **score_probes(
            model, probes, sets.splits["testing"].labels, reports["testing"]["predicted"]
        ),
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
