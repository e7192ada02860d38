"""The Speech Commands reader: index, classes, split, silence/unknown sampling, augmentation.

Any folder in the Speech Commands layout works, synthetic or real: one folder per word holding
``SPEAKER_nohash_N.wav`` clips, plus ``_background_noise_/`` with longer noise recordings.

Classes are ``_silence_`` (index 0), ``_unknown_`` (1), then the wanted words. Each split gets
``silence_percentage`` / ``unknown_percentage`` percent of its wanted-word count as silence and
unknown clips (unknown clips are drawn from the other word folders; silence clips are snippets of
background noise at a random volume). Training clips are augmented (speed, time shift, background
noise, band limit, level); validation and test clips are not shifted, and their noise is drawn
from a fixed seed, so evaluation is deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
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
    """Decoded clips of one split and the split's augmented copies of them.

    The copies are made on demand by :meth:`copies`, one at a time: the training split's six
    copies of the demo's clips would take 1.7 GB at once.
    """

    labels: np.ndarray
    clips: list[ClipRef]
    """The clips of the first copy (later copies may hold other ``_unknown_`` clips)."""
    augment: Callable[[int, np.random.Generator], np.ndarray]
    """Augmented copy number ``i`` ``[N, samples]`` of the split (silence as zeros), drawing
    from the generator."""
    words: Callable[[int], list[str]]
    """The word each clip of copy ``i`` says: its folder's name (``_silence_`` for silence)."""
    count: int
    """Copies of this split: ``augment_copies`` for training, 1 otherwise."""
    seed: list[int]
    """Seed of the generator the copies draw from, in turn."""

    def copies(self) -> Iterator[np.ndarray]:
        """Each augmented copy ``[N, samples]`` in turn; every call yields the same copies."""
        rng = np.random.default_rng(self.seed)
        for i in range(self.count):
            yield self.augment(i, rng)


@dataclass
class DatasetIndex:
    """Which clips make up each split, and what was skipped or converted on the way."""

    root: Path
    labels: list[str]
    splits: dict[str, list[ClipRef]]
    background_files: list[Path]
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    converted_files: list[dict[str, str]] = field(default_factory=list)
    unknown_pool: list[ClipRef] = field(default_factory=list)
    """Every ``_unknown_`` clip of the training speakers, the sampled ones first, when later
    training copies draw their ``_unknown_`` clips afresh (``[data] redraw_unknown``)."""

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
        selections = {**self.splits, "unknown_pool": self.unknown_pool}
        for path in sorted(
            {c.path for cs in selections.values() for c in cs if c.path}
            | set(self.background_files)
        ):
            digest.update(str(path.relative_to(self.root)).encode())
            digest.update(path.read_bytes())
        for split, clips in selections.items():
            for clip in clips:
                # Relative paths: a cache or dataset folder that moves keeps its features.
                name = clip.path.relative_to(self.root) if clip.path else None
                digest.update(f"{split}:{clip.label}:{name}".encode())
        return digest.hexdigest()


def index_dataset(root: Path, config: DataConfig) -> DatasetIndex:
    """Scan ``root`` and choose the clips of each split.

    Unusable background noise files are left out (and listed in ``skipped_files``).

    :raises DataError: the folder is missing, has no word folders, lacks a wanted word, or a
        wanted word's folder holds no WAV file in the training split.
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
    for word in config.wanted_words:
        _check_word_has_training_clips(word, word_dirs[word], wanted["training"], labels)

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
    index = DatasetIndex(root, labels, splits, [])
    if config.redraw_unknown and config.augment_copies > 1:
        index.unknown_pool = unknown["training"]
    for path in background:
        try:
            read_clip(path, config.sample_rate)
        except UnusableAudio as exc:
            index.skipped_files.append({"path": str(path.relative_to(root)), "reason": str(exc)})
        else:
            index.background_files.append(path)
    return index


def _check_word_has_training_clips(
    word: str, folder: Path, training: list[ClipRef], labels: list[str]
) -> None:
    # A class with no training example trains silently into a model that never predicts it.
    label = labels.index(word)
    if any(clip.label == label for clip in training):
        return
    if not any(folder.glob("*.wav")):
        raise DataError(
            f"wanted word {word!r}: its folder {str(folder)!r} holds no .wav files; add clips "
            "or remove the word from data.wanted_words"
        )
    raise DataError(
        f"wanted word {word!r}: none of the .wav files in {str(folder)!r} falls in the training "
        "split (the split is decided by a hash of the speaker part of the file name); add clips "
        "of more speakers"
    )


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
        """Decode a split; training gets ``augment_copies`` augmented copies of each clip, made
        when :meth:`SplitAudio.copies` is iterated."""
        clips = []
        foreground = []
        for clip in self.index.splits[split]:
            if clip.path is None:
                foreground.append(np.zeros(self.num_samples, np.float32))
            else:
                audio = self._read(clip.path, self.num_samples)
                if audio is None:
                    continue
                foreground.append(audio)
            clips.append(clip)
        labels = np.array([c.label for c in clips], dtype=np.int64)
        stack = np.stack(foreground) if foreground else np.zeros((0, self.num_samples), np.float32)
        training = split == "training"
        is_unknown = labels == self.index.labels.index(UNKNOWN_LABEL)
        redraw = _UnknownRedraw(self, is_unknown) if training else None
        words = [_word(clip) for clip in clips]
        return SplitAudio(
            labels=labels,
            clips=clips,
            augment=functools.partial(self._augment, stack, labels, redraw, training=training),
            words=lambda copy: redraw.words(words, copy) if redraw else list(words),
            count=self.config.augment_copies if training else 1,
            # Validation and test noise is drawn from a fixed seed per split: evaluation repeats.
            seed=[self.config.seed, SPLITS.index(split)],
        )

    def _augment(
        self,
        clips: np.ndarray,
        labels: np.ndarray,
        redraw: _UnknownRedraw | None,
        copy: int,
        rng: np.random.Generator,
        *,
        training: bool,
    ) -> np.ndarray:
        if redraw is not None:
            clips = redraw.audio(clips, copy)
        out = np.empty_like(clips)
        config = self.config
        shift_max = int(config.time_shift_ms * config.sample_rate / 1000)
        for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
            # Fast and slow talkers: resampled speech (tempo and pitch move together).
            if training and label != 0 and rng.uniform(0, 1) < config.speed_frequency:
                clip = change_speed(clip, rng.uniform(config.speed_min, config.speed_max))
            if training and shift_max:
                clip = _shift(clip, int(rng.integers(-shift_max, shift_max + 1)))
            volume = 0.0
            if label == 0:
                volume = rng.uniform(0, 1)
            elif training and rng.uniform(0, 1) < config.background_frequency:
                volume = rng.uniform(0, config.background_volume)
            if volume and self.background:
                clip = clip + volume * self._noise_snippet(rng)
            if training and rng.uniform(0, 1) < config.band_limit_frequency:
                # A telephone line or an 8 kHz recording: the model must not need the highs.
                clip = band_limit(clip, BAND_LIMITS[int(rng.integers(len(BAND_LIMITS)))])
            if training and config.level_db:
                clip = clip * 10 ** (rng.uniform(-config.level_db, config.level_db) / 20)
            out[i] = np.clip(clip, -1.0, 1.0)
        return out

    def _noise_snippet(self, rng: np.random.Generator) -> np.ndarray:
        noise = self.background[int(rng.integers(len(self.background)))]
        if len(noise) <= self.num_samples:
            return fit_length(noise, self.num_samples)
        start = int(rng.integers(0, len(noise) - self.num_samples))
        return noise[start : start + self.num_samples]

    def _read(self, path: Path, num_samples: int | None = None) -> np.ndarray | None:
        try:
            loaded = read_clip(path, self.config.sample_rate, num_samples)
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


def _word(clip: ClipRef) -> str:
    return clip.path.parent.name if clip.path else SILENCE_LABEL


class _UnknownRedraw:
    """Copy ``i`` of the training split with its ``_unknown_`` places holding the pool's
    clips of copy ``i`` (``[data] redraw_unknown``).

    Copy 0 holds the split's own sampled clips (the pool's first ones); each later copy the
    next ones, round the pool, so six copies of a pool 2.75 times the sampled clips show every
    clip two or three times instead of the sampled third six times.
    """

    def __init__(self, loader: AudioLoader, is_unknown: np.ndarray):
        self.loader = loader
        self.is_unknown = is_unknown
        self.places = int(is_unknown.sum())
        pool = loader.index.unknown_pool
        self.active = 0 < self.places < len(pool)

    @functools.cached_property
    def _pool(self) -> tuple[np.ndarray, list[str]]:
        # Read for the second copy, which is augmented while the first one is featurized.
        loader = self.loader
        audio, words = [], []
        for clip in loader.index.unknown_pool:
            read = loader._read(clip.path, loader.num_samples)
            if read is not None:
                audio.append(read)
                words.append(_word(clip))
        return np.stack(audio), words

    def _chosen(self, copy: int) -> np.ndarray:
        return (copy * self.places + np.arange(self.places)) % len(self._pool[1])

    def audio(self, clips: np.ndarray, copy: int) -> np.ndarray:
        """``clips`` (copy ``copy``'s audio) with its ``_unknown_`` places redrawn."""
        if not self.active or copy == 0:
            return clips
        clips = clips.copy()
        clips[self.is_unknown] = self._pool[0][self._chosen(copy)]
        return clips

    def words(self, words: list[str], copy: int) -> list[str]:
        """``words`` (of the split's own clips) as copy ``copy`` says them."""
        if not self.active or copy == 0:
            return list(words)
        out = np.array(words, dtype=object)
        out[self.is_unknown] = np.array(self._pool[1], dtype=object)[self._chosen(copy)]
        return out.tolist()


BAND_LIMITS = ("telephone", "lowpass4k")
"""Band limits of augmentation and of the band-limited test copy (:func:`band_limit`)."""


def band_limit(clip: np.ndarray, kind: str, sample_rate: int = 16000) -> np.ndarray:
    """``clip`` through a telephone band (300-3400 Hz) or an 8 kHz recording (4 kHz low-pass).

    :param kind: ``telephone`` or ``lowpass4k``.
    """
    from scipy import signal

    return signal.sosfilt(_band_filter(kind, sample_rate), clip).astype(np.float32)


@functools.cache
def _band_filter(kind: str, sample_rate: int) -> np.ndarray:
    # Designed once: the design costs more than filtering a clip.
    from scipy import signal

    if kind == "telephone":
        return signal.butter(6, [300.0, 3400.0], "bandpass", fs=sample_rate, output="sos")
    if kind == "lowpass4k":
        return signal.butter(10, 3800.0, "lowpass", fs=sample_rate, output="sos")
    raise ValueError(f"unknown band limit {kind!r}; valid: {', '.join(BAND_LIMITS)}")


def change_speed(clip: np.ndarray, factor: float) -> np.ndarray:
    """Play ``clip`` ``factor`` times faster (resampled), cut or padded about its centre."""
    from fractions import Fraction

    from scipy import signal

    ratio = Fraction(1 / factor).limit_denominator(100)
    fast = signal.resample_poly(clip, ratio.numerator, ratio.denominator).astype(np.float32)
    n = clip.size
    if fast.size >= n:
        start = (fast.size - n) // 2
        return fast[start : start + n]
    pad = n - fast.size
    return np.pad(fast, (pad // 2, pad - pad // 2))


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
