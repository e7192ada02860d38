"""The features stage: decode, augment and featurize every split, cached on disk.

The cache key covers everything that changes the numbers: the dataset's file contents and clip
selection, the data settings that shape augmentation, the version of the project's own
augmentation and training-stream code (:data:`BUILDER_VERSION`), the extractor's name, plugin
version and settings. A second run with the same key loads the arrays instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.config import DataConfig, FeatureConfig
from kwscompress.data.dataset import AudioLoader, DatasetIndex
from kwscompress.data.splits import SPLITS
from kwscompress.progress import progress_bar
from kwscompress.protocols import FeatureExtractor
from kwscompress.run import atomic_dir, file_lock, remove_stale_temps
from kwscompress.stream.training import training_stream_examples
from kwscompress.train import LabeledFeatures

BUILDER_VERSION = 2
"""Bumped whenever the project's augmentation or training-stream code starts producing other
arrays from the same settings (part of the cache key, like an extractor's plugin version).
Version 2 added the words the training examples say (``training.words.npy``)."""

CHUNK = 256
"""Clips per call to the extractor: large enough to amortise its overhead, small for memory."""


@dataclass
class FeatureSets:
    """Features of every split, the class names and the clip files behind each example."""

    labels: list[str]
    splits: dict[str, LabeledFeatures]
    files: dict[str, list[str]]
    """Per split, each example's file relative to the dataset root ('' for silence); for the
    training split's ``_unknown_`` examples, the file of the first augmented copy."""
    meta: dict[str, Any]
    """Split summary, skipped and converted files, extractor settings, cache key, and
    ``words``: the names behind the training split's word indices
    (:attr:`~kwscompress.train.LabeledFeatures.words`)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(frames, bins)`` of one example."""
        frames, bins = self.splits["validation"].features.shape[-2:]
        return int(frames), int(bins)


def cache_key(
    index: DatasetIndex,
    data: DataConfig,
    extractor: FeatureExtractor,
    extractor_version: str,
    settings: dict[str, Any],
) -> str:
    """Hash of everything the cached arrays depend on."""
    shaping = {k: v for k, v in vars(data).items() if k not in ("source", "root", "synth")}
    blob = json.dumps(
        {
            "dataset": index.fingerprint(),
            "builder": BUILDER_VERSION,
            "data": shaping,
            "extractor": extractor.name,
            "version": extractor_version,
            "settings": settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def compute_features(
    index: DatasetIndex,
    data: DataConfig,
    features: FeatureConfig,
    extractor: FeatureExtractor,
    extractor_version: str,
    cache_dir: Path,
) -> tuple[FeatureSets, bool]:
    """Return the feature sets and whether they came from the cache."""
    settings = extractor.settings(features, data.sample_rate)
    key = cache_key(index, data, extractor, extractor_version, settings)
    folder = cache_dir / "features" / key
    if (folder / "meta.json").exists():
        return _load(folder), True
    remove_stale_temps(folder.parent)
    # Concurrent runs with one key: the second waits, then loads what the first computed.
    with file_lock(folder.parent / f".{key}.lock", f"computing the features {folder}"):
        if (folder / "meta.json").exists():
            return _load(folder), True
        result = _compute(index, data, features, extractor, extractor_version, settings, key)
        _save(result, folder)
    return result, False


def _compute(
    index: DatasetIndex,
    data: DataConfig,
    features: FeatureConfig,
    extractor: FeatureExtractor,
    extractor_version: str,
    settings: dict[str, Any],
    key: str,
) -> FeatureSets:
    loader = AudioLoader(index, data)
    total = sum(
        len(index.splits[s]) * (data.augment_copies if s == "training" else 1) for s in SPLITS
    )
    splits, files = {}, {}
    words: list[str] = []
    with progress_bar(f"Extracting {extractor.name} features", total) as advance:
        for split in SPLITS:
            decoded = loader.load(split)
            # One augmented copy of the audio at a time (the next one is made meanwhile): only
            # the features are kept.
            copies = [
                _extract(extractor, copy, features, data.sample_rate, advance)
                for copy in _one_ahead(decoded.copies())
            ]
            stacked = np.stack(copies) if split == "training" else copies[0]
            labels = decoded.labels
            files[split] = [
                str(c.path.relative_to(index.root)) if c.path else "" for c in decoded.clips
            ]
            if split != "training":
                splits[split] = LabeledFeatures(stacked, labels)
                continue
            said = [decoded.words(copy) for copy in range(decoded.count)]
            if data.stream_examples > 0:
                extra = training_stream_examples(
                    index.root, data, features, extractor, index.labels,
                    round(data.stream_examples * len(labels)),
                )  # fmt: skip
                if extra is not None:
                    stacked = np.concatenate([stacked, extra.features], axis=1)
                    labels = np.concatenate([labels, extra.labels])
                    files[split] += extra.files
                    said = [copy + extra.words for copy in said]
            words = sorted({w for copy in said for w in copy})
            number = {w: i for i, w in enumerate(words)}
            ids = np.array([[number[w] for w in copy] for copy in said], np.int32)
            splits[split] = LabeledFeatures(stacked, labels, ids)
    meta = {
        "cache_key": key,
        "extractor": extractor.name,
        "extractor_version": extractor_version,
        "settings": settings,
        "labels": index.labels,
        "split_summary": _summary(index.labels, splits),
        "skipped_files": index.skipped_files,
        "converted_files": index.converted_files,
        "words": words,
    }
    return FeatureSets(index.labels, splits, files, meta)


def _one_ahead(items: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``items`` in order, the next one computed in a thread while the caller uses this one.

    Augmentation (NumPy and SciPy, one core) then overlaps the extractor (the ``micro``
    frontend runs in TensorFlow, which releases the GIL): the demo's features stage takes
    26-29 s instead of 32 s, with the same arrays.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(next, items, done)
        while (item := upcoming.result()) is not done:
            upcoming = pool.submit(next, items, done)
            yield item


def _extract(
    extractor: FeatureExtractor,
    audio: np.ndarray,
    config: FeatureConfig,
    sample_rate: int,
    advance: Any,
) -> np.ndarray:
    parts = []
    for start in range(0, len(audio), CHUNK):
        chunk = audio[start : start + CHUNK]
        parts.append(np.asarray(extractor.extract(chunk, config, sample_rate), dtype=np.float32))
        advance(len(chunk))
    if not parts:
        shape = extractor.extract(np.zeros((1, audio.shape[-1]), np.float32), config, sample_rate)
        return np.zeros((0, *shape.shape[1:]), np.float32)
    return np.concatenate(parts)


def _summary(labels: list[str], splits: dict[str, LabeledFeatures]) -> dict[str, dict[str, int]]:
    summary = {}
    for split, data in splits.items():
        counts = np.bincount(data.labels, minlength=len(labels))
        row = {label: int(counts[i]) for i, label in enumerate(labels)}
        row["total"] = len(data.labels)
        summary[split] = row
    return summary


def _save(sets: FeatureSets, folder: Path) -> None:
    # Written into a sibling temp folder and renamed: a crash never leaves a half-written cache.
    with atomic_dir(folder) as tmp:
        for split, data in sets.splits.items():
            np.save(tmp / f"{split}.features.npy", data.features)
            np.save(tmp / f"{split}.labels.npy", data.labels)
            if data.words is not None:
                np.save(tmp / f"{split}.words.npy", data.words)
        (tmp / "files.json").write_text(json.dumps(sets.files), "utf-8")
        (tmp / "meta.json").write_text(json.dumps(sets.meta, indent=2), "utf-8")


def _load(folder: Path) -> FeatureSets:
    meta = json.loads((folder / "meta.json").read_text("utf-8"))
    files = json.loads((folder / "files.json").read_text("utf-8"))
    splits = {}
    for split in SPLITS:
        words = folder / f"{split}.words.npy"
        splits[split] = LabeledFeatures(
            np.load(folder / f"{split}.features.npy"),
            np.load(folder / f"{split}.labels.npy"),
            np.load(words) if words.exists() else None,
        )
    return FeatureSets(meta["labels"], splits, files, meta)
