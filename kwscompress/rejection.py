"""Rejection probes: the clips that show how a model says "none of my words", for every model.

The evaluate stage scores the trained model on them and the compression sweep scores every
variant, so a 4-bit or pruned variant's rejection stands beside the float model's. The probes'
features are extracted once (:func:`collect_probes`); scoring a model (:func:`score_probes`)
only runs it. What is measured:

* from the test split's predictions (:func:`rejection_metrics`): ``_unknown_`` recall and, per
  wanted word, its false-accept rate: the share of the non-keyword test clips (``_silence_``
  and ``_unknown_``) labelled as that word;
* on every non-keyword clip of the test speakers (:func:`word_table`): what each word (each
  confusable, filler and other speech) was heard as, and the share rejected per kind;
* on altered copies of the test clips (:func:`robustness`): through a telephone band, through a
  4 kHz low-pass (an 8 kHz recording), and played :data:`FAST_SPEED` times faster;
* test accuracy on the voice families training never heard, beside the families it did
  (:func:`held_out_voices`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from kwscompress.data.splits import speaker_of, which_set
from kwscompress.protocols import FeatureExtractor
from kwscompress.stages.features import FeatureSets
from kwscompress.train import predict

FAST_SPEED = 1.25
"""Speed factor of the fast-speech test copy."""

HELD_OUT, SEEN, UNKNOWN_VOICE = 1, 0, -1
"""Values of :attr:`RejectionProbes.voices`."""


@dataclass
class WordClips:
    """Every non-keyword clip of one split's speakers, one entry per readable clip."""

    split: str
    words: list[str]
    """The word folder of each clip."""
    features: np.ndarray
    """``[N, frames, bins]``."""
    confusable_of: dict[str, list[str]]
    """The wanted words each confusable word belongs to (from the synthetic manifest)."""


@dataclass
class RejectionProbes:
    """Features of the probe clips of one feature set, ready to score any model on.

    Every part is optional: a dataset without files on disk has no word clips and no altered
    copies, one without a synthetic manifest no voice families.
    """

    feature_key: str
    """The feature cache key the probes were made for (same extractor, settings and data)."""
    labels: list[str]
    words: WordClips | None = None
    copies: dict[str, np.ndarray] = field(default_factory=dict)
    """Altered test copies by name (``clean``, ``telephone``, ``lowpass4k``, ``fast``)."""
    copy_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    voices: np.ndarray | None = None
    """Per test example: :data:`HELD_OUT`, :data:`SEEN` or :data:`UNKNOWN_VOICE` (no file or
    speaker not in the manifest)."""
    families: list[str] = field(default_factory=list)
    """The held-out voice families."""


def collect_probes(
    sets: FeatureSets,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
    manifest: dict[str, Any] | None,
    root: Path | None,
) -> RejectionProbes:
    """Read and featurize the probe clips of ``sets`` (the dataset's files under ``root``)."""
    probes = RejectionProbes(sets.meta.get("cache_key", ""), list(sets.labels))
    if root is not None:
        probes.words = _word_clips(root, extractor, features, data, manifest)
        probes.copies, probes.copy_labels = _altered_copies(sets, root, extractor, features, data)
    if manifest is not None:
        speakers = {s["speaker_id"]: s for s in manifest["speakers"]}
        probes.voices = np.array(
            [
                (HELD_OUT if speakers[speaker_of(path)]["held_out"] else SEEN)
                if path and speaker_of(path) in speakers
                else UNKNOWN_VOICE
                for path in sets.files["testing"]
            ],
            dtype=np.int8,
        )
        probes.families = list(manifest["held_out_families"])
    return probes


def score_probes(
    model: torch.nn.Module, probes: RejectionProbes, truth: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """``rejection``, ``robustness`` and ``held_out_voices`` records of ``model``.

    :param truth: the test split's labels, in the order the probes were made for.
    :param predicted: the model's class for each of those clips (``evaluate``'s ``predicted``:
        the test split is not run again).
    """
    labels = probes.labels
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    found: dict[str, Any] = {"rejection": rejection_metrics(confusion.tolist(), labels)}
    if probes.words is not None:
        found["rejection"]["words"] = word_table(model, probes.words, labels)
    if probes.copies:
        found["robustness"] = robustness(model, probes.copies, probes.copy_labels, labels)
    if probes.voices is not None:
        found["held_out_voices"] = held_out_voices(
            predicted == truth, probes.voices, probes.families
        )
    return found


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


def word_table(model: torch.nn.Module, clips: WordClips, labels: list[str]) -> dict[str, Any]:
    """What each non-keyword word was heard as, and the share rejected per word and per kind.

    A word's ``kind`` is ``confusable`` (the synthetic set's rule for some wanted word),
    ``other`` (phrases, fragments, non-words) or ``filler``.
    """
    predicted = predict(model, clips.features).argmax(axis=1).tolist() if clips.words else []
    table: dict[str, dict[str, Any]] = {}
    for word, label in zip(clips.words, predicted, strict=True):
        kind = (
            "confusable"
            if word in clips.confusable_of
            else "other"
            if word.startswith("other-")
            else "filler"
        )
        row = table.setdefault(
            word,
            {
                "kind": kind,
                "confusable_of": clips.confusable_of.get(word, []),
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
        "split": clips.split,
        "by_kind": {
            kind: {**c, "rejection_rate": c["rejected"] / c["clips"]} for kind, c in kinds.items()
        },
        "words": dict(sorted(table.items(), key=lambda item: item[1]["rejected"])),
    }


def robustness(
    model: torch.nn.Module, copies: dict[str, np.ndarray], truth: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Accuracy, overall and per class, on each altered copy of the test clips."""
    out: dict[str, Any] = {"clips": len(truth)}
    for name, features in copies.items():
        predicted = predict(model, features).argmax(axis=1)
        per_class = {
            label: float((predicted[truth == index] == index).mean())
            for index, label in enumerate(labels)
            if (truth == index).any()
        }
        out[name] = {"accuracy": float((predicted == truth).mean()), "per_class": per_class}
    return out


def held_out_voices(correct: np.ndarray, voices: np.ndarray, families: list[str]) -> dict[str, Any]:
    """Test accuracy on voice families never heard in training, beside the families that were."""
    held, seen = voices == HELD_OUT, voices == SEEN
    return {
        "families": families,
        "held_out_samples": int(held.sum()),
        "held_out_accuracy": float(correct[held].mean()) if held.any() else None,
        "seen_samples": int(seen.sum()),
        "seen_accuracy": float(correct[seen].mean()) if seen.any() else None,
    }


def _word_clips(
    root: Path,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
    manifest: dict[str, Any] | None,
    split: str = "testing",
) -> WordClips:
    """Every clip of every word folder other than the wanted words, of ``split``'s speakers
    (not only the ``_unknown_`` clips the split sampled); unreadable files are left out."""
    confusable_of: dict[str, list[str]] = {}
    for wanted, words in ((manifest or {}).get("words", {}).get("confusables", {})).items():
        for word in words:
            confusable_of.setdefault(word, []).append(wanted)
    num_samples = data.sample_rate * data.clip_duration_ms // 1000
    audio, words = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")) or folder.name in data.wanted_words:
            continue
        for path in sorted(folder.glob("*.wav")):
            if which_set(path.name, data.validation_percentage, data.testing_percentage) != split:
                continue
            try:
                audio.append(read_clip(path, data.sample_rate, num_samples).audio)
            except UnusableAudio:
                continue
            words.append(folder.name)
    extracted = (
        extractor.extract(np.stack(audio), features, data.sample_rate)
        if audio
        else np.zeros((0, 0, 0), np.float32)  # never run: no word, no prediction
    )
    return WordClips(split, words, extracted, confusable_of)


def _altered_copies(
    sets: FeatureSets,
    root: Path,
    extractor: FeatureExtractor,
    features: FeatureConfig,
    data: DataConfig,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of the test clips with a file (silence clips have none): ``clean`` (as
    recorded), ``telephone`` (300-3400 Hz), ``lowpass4k`` (an 8 kHz recording) and ``fast``
    (:data:`FAST_SPEED` times faster, tempo and pitch)."""
    files = sets.files["testing"]
    keep = [i for i, name in enumerate(files) if name]
    truth = sets.splits["testing"].labels[keep]
    if not keep:
        return {}, truth
    num_samples = data.sample_rate * data.clip_duration_ms // 1000
    audio = np.stack(
        [read_clip(root / files[i], data.sample_rate, num_samples).audio for i in keep]
    )
    copies = {"clean": audio}
    for kind in BAND_LIMITS:
        copies[kind] = np.stack([band_limit(clip, kind, data.sample_rate) for clip in audio])
    copies["fast"] = np.stack([change_speed(clip, FAST_SPEED) for clip in audio])
    return {
        name: extractor.extract(np.clip(clips, -1, 1), features, data.sample_rate)
        for name, clips in copies.items()
    }, truth
