"""The Speech Commands reader: index, classes, split, silence/unknown sampling, augmentation.

Any folder in the Speech Commands layout works, synthetic or real: one folder per word holding
``SPEAKER_nohash_N.wav`` clips, plus ``_background_noise_/`` with longer noise recordings.

Classes are ``_silence_`` (index 0), ``_unknown_`` (1), then the wanted words. Each split gets
``silence_percentage`` / ``unknown_percentage`` percent of its wanted-word count as silence and
unknown clips (unknown clips are drawn from the other word folders; silence clips are snippets of
background noise at a random volume). Training clips are augmented (time shift, background noise);
validation and test clips are not shifted, and their noise is drawn from a fixed seed, so
evaluation is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.config import DataConfig
from kwscompress.data.audio import UnusableAudio, fit_length, read_clip
from kwscompress.data.splits import SPLITS, which_set
from kwscompress.errors import DataError

SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"


@dataclass(frozen=True)
class ClipRef:
    """One example: a file (or ``None`` for silence) and its class index."""

    path: Path | None
    label: int


@dataclass
class SplitAudio:
    """Decoded clips of one split: ``audio`` is ``[copies, N, samples]`` float32."""

    audio: np.ndarray
    labels: np.ndarray
    clips: list[ClipRef]


@dataclass
class DatasetIndex:
    """Which clips make up each split, and what was skipped or converted on the way."""

    root: Path
    labels: list[str]
    splits: dict[str, list[ClipRef]]
    background_files: list[Path]
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    converted_files: list[dict[str, str]] = field(default_factory=list)

    def split_summary(self) -> dict[str, dict[str, int]]:
        """Clips per class per split (the reference report's Table 2), with totals."""
        summary = {}
        for split, clips in self.splits.items():
            counts = Counter(self.labels[c.label] for c in clips)
            row = {label: counts.get(label, 0) for label in self.labels}
            row["total"] = len(clips)
            summary[split] = row
        return summary

    def fingerprint(self) -> str:
        """A hash of every file's content and of the clip selection: the feature cache key."""
        digest = hashlib.sha256()
        for path in sorted(
            {c.path for cs in self.splits.values() for c in cs if c.path}
            | set(self.background_files)
        ):
            digest.update(str(path.relative_to(self.root)).encode())
            digest.update(path.read_bytes())
        for split in SPLITS:
            for clip in self.splits[split]:
                digest.update(f"{split}:{clip.label}:{clip.path}".encode())
        return digest.hexdigest()


def index_dataset(root: Path, config: DataConfig) -> DatasetIndex:
    """Scan ``root`` and choose the clips of each split.

    :raises DataError: the folder is missing, has no word folders, or lacks a wanted word.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset directory {str(root)!r} does not exist")
    word_dirs = {
        d.name: d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(("_", "."))
    }
    if not word_dirs:
        raise DataError(
            f"dataset directory {str(root)!r} has no word folders (expected the Speech Commands "
            "layout: one folder per word holding SPEAKER_nohash_N.wav files)"
        )
    for word in config.wanted_words:
        if word not in word_dirs:
            raise DataError(
                f"wanted word {word!r} has no folder in {str(root)!r}; words available: "
                + ", ".join(word_dirs)
            )
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, *config.wanted_words]
    wanted: dict[str, list[ClipRef]] = {split: [] for split in SPLITS}
    unknown: dict[str, list[ClipRef]] = {split: [] for split in SPLITS}
    for word, folder in word_dirs.items():
        label = labels.index(word) if word in config.wanted_words else 1
        for path in sorted(folder.glob("*.wav")):
            split = which_set(path.name, config.validation_percentage, config.testing_percentage)
            (wanted if label > 1 else unknown)[split].append(ClipRef(path, label))

    rng = random.Random(config.seed)
    splits = {}
    for split in SPLITS:
        base = len(wanted[split])
        silence_count = math.ceil(base * config.silence_percentage / 100)
        unknown_count = math.ceil(base * config.unknown_percentage / 100)
        pool = unknown[split]
        rng.shuffle(pool)
        chosen = pool[:unknown_count]
        silence = [ClipRef(None, 0)] * silence_count
        splits[split] = wanted[split] + chosen + silence
    background_dir = root / BACKGROUND_NOISE_DIR
    background = sorted(background_dir.glob("*.wav")) if background_dir.is_dir() else []
    return DatasetIndex(root, labels, splits, background)


class AudioLoader:
    """Decodes the clips of an index and applies the split's augmentation."""

    def __init__(self, index: DatasetIndex, config: DataConfig):
        self.index = index
        self.config = config
        self.num_samples = config.sample_rate * config.clip_duration_ms // 1000
        self.background = [self._read(path) for path in index.background_files]
        self.background = [b for b in self.background if b is not None and len(b) > 0]
        if not self.background and any(c.path is None for c in _all_clips(index)):
            raise DataError(
                f"{str(index.root / BACKGROUND_NOISE_DIR)!r} holds no usable noise recordings, "
                "and silence clips are made from them; add WAV files or set "
                "data.silence_percentage = 0"
            )

    def load(self, split: str) -> SplitAudio:
        """Decode a split; training gets ``augment_copies`` augmented copies of each clip."""
        clips = []
        foreground = []
        for clip in self.index.splits[split]:
            if clip.path is None:
                foreground.append(np.zeros(self.num_samples, np.float32))
            else:
                audio = self._read(clip.path)
                if audio is None:
                    continue
                foreground.append(fit_length(audio, self.num_samples))
            clips.append(clip)
        labels = np.array([c.label for c in clips], dtype=np.int64)
        stack = np.stack(foreground) if foreground else np.zeros((0, self.num_samples), np.float32)
        training = split == "training"
        copies = self.config.augment_copies if training else 1
        # Validation and test noise is drawn from a fixed seed per split: evaluation repeats.
        rng = np.random.default_rng([self.config.seed, SPLITS.index(split)])
        audio = np.stack([self._augment(stack, labels, rng, training) for _ in range(copies)])
        return SplitAudio(audio, labels, clips)

    def _augment(
        self, clips: np.ndarray, labels: np.ndarray, rng: np.random.Generator, training: bool
    ) -> np.ndarray:
        out = np.empty_like(clips)
        shift_max = int(self.config.time_shift_ms * self.config.sample_rate / 1000)
        for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
            if training and shift_max:
                clip = _shift(clip, int(rng.integers(-shift_max, shift_max + 1)))
            volume = 0.0
            if label == 0:
                volume = rng.uniform(0, 1)
            elif training and rng.uniform(0, 1) < self.config.background_frequency:
                volume = rng.uniform(0, self.config.background_volume)
            if volume and self.background:
                clip = clip + volume * self._noise_snippet(rng)
            out[i] = np.clip(clip, -1.0, 1.0)
        return out

    def _noise_snippet(self, rng: np.random.Generator) -> np.ndarray:
        noise = self.background[int(rng.integers(len(self.background)))]
        if len(noise) <= self.num_samples:
            return fit_length(noise, self.num_samples)
        start = int(rng.integers(0, len(noise) - self.num_samples))
        return noise[start : start + self.num_samples]

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            loaded = read_clip(path, self.config.sample_rate)
        except UnusableAudio as exc:
            entry = {"path": str(path.relative_to(self.index.root)), "reason": str(exc)}
            if entry not in self.index.skipped_files:
                self.index.skipped_files.append(entry)
            return None
        if loaded.conversions:
            entry = {
                "path": str(path.relative_to(self.index.root)),
                "conversion": "; ".join(loaded.conversions),
            }
            if entry not in self.index.converted_files:
                self.index.converted_files.append(entry)
        return loaded.audio


def _shift(clip: np.ndarray, offset: int) -> np.ndarray:
    # Shift by padding with silence on one side and cutting the other, as Speech Commands does.
    if offset > 0:
        return np.concatenate([np.zeros(offset, clip.dtype), clip[:-offset]])
    if offset < 0:
        return np.concatenate([clip[-offset:], np.zeros(-offset, clip.dtype)])
    return clip


def _all_clips(index: DatasetIndex) -> list[ClipRef]:
    return [c for clips in index.splits.values() for c in clips]


def synth_manifest(root: Path) -> dict[str, Any] | None:
    """The synthetic dataset's speaker manifest (``synth_manifest.json``), or None for real data."""
    manifest = root / "synth_manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text("utf-8"))
