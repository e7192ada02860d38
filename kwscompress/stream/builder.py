"""Long test streams: background noise with words placed at recorded times.

A stream is made from the clips of one split only (so a test stream holds only test speakers):
each clip's spoken part is found from its energy (:func:`speech_extent`), cut out with a short
margin and faded, and added onto a continuous background made of the dataset's
``_background_noise_`` recordings. Words follow each other with a random gap, so one word never
overlaps another. Every placed word is an :class:`Event` whose ``start_ms`` and ``end_ms`` are
where its speech is in the stream: the matching rule (:mod:`kwscompress.stream.metrics`) scores
detections against ``end_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.data.audio import UnusableAudio, read_clip
from kwscompress.data.dataset import BACKGROUND_NOISE_DIR
from kwscompress.data.splits import which_set
from kwscompress.errors import DataError

FRAME_MS = 10
"""Frame length of the energy measurement that finds the spoken part of a clip."""

MARGIN_MS = 40
"""Audio kept before and after the spoken part when a word is cut out of its clip."""

FADE_MS = 5
"""Fade in and out of a cut word, so the cut makes no click."""


@dataclass(frozen=True)
class SourceClip:
    """A clip that may be placed in a stream."""

    path: Path
    word: str
    """The word folder it comes from."""
    kind: str
    """``keyword`` (a wanted word), ``confusable``, ``other`` (phrases, fragments, non-words)
    or ``filler``."""


@dataclass(frozen=True)
class Event:
    """One word placed in a stream."""

    word: str
    kind: str
    start_ms: float
    """Where the word's speech starts in the stream."""
    end_ms: float
    """Where the word's speech ends in the stream."""
    file: str
    """The clip it was cut from (relative to the dataset root when it is under it)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass
class Stream:
    """A long recording and the words in it."""

    audio: np.ndarray
    """float32 samples in [-1, 1]."""
    sample_rate: int
    events: list[Event]

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate


def speech_extent(
    clip: np.ndarray, sample_rate: int, below_peak_db: float = 30.0
) -> tuple[int, int]:
    """``(start, end)`` sample indices of the spoken part of a clip, found from frame energy.

    A frame is speech when its energy is within ``below_peak_db`` of the loudest frame and at
    least 10 dB above the clip's noise floor (its 10th-percentile frame). The extent runs from
    the first such frame to the end of the last one. A clip with no such frame (silence) gives
    ``(0, 0)``.
    """
    frame = sample_rate * FRAME_MS // 1000
    count = len(clip) // frame
    if count == 0:
        return 0, 0
    energy = (clip[: count * frame].astype(np.float64).reshape(count, frame) ** 2).mean(axis=1)
    db = 10 * np.log10(energy + 1e-12)
    threshold = max(db.max() - below_peak_db, np.percentile(db, 10) + 10)
    loud = np.flatnonzero(db >= threshold)
    if loud.size == 0 or db.max() < np.percentile(db, 10) + 10:
        return 0, 0
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def source_clips(
    root: Path,
    split: str,
    wanted_words: Sequence[str],
    validation_percentage: float,
    testing_percentage: float,
    confusables: Sequence[str] = (),
) -> list[SourceClip]:
    """Every clip of ``split``'s speakers in the word folders of ``root``, with its kind.

    :param confusables: words that count as ``confusable`` (from the synthetic manifest); the
        ``other-*`` folders of the synthetic set are ``other``; every other word is ``filler``.
    """
    clips = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")):
            continue
        word = folder.name
        if word in wanted_words:
            kind = "keyword"
        elif word in confusables:
            kind = "confusable"
        elif word.startswith("other-"):
            kind = "other"
        else:
            kind = "filler"
        for path in sorted(folder.glob("*.wav")):
            if which_set(path.name, validation_percentage, testing_percentage) == split:
                clips.append(SourceClip(path, word, kind))
    return clips


def slot_seconds(gap_ms: tuple[float, float]) -> float:
    """About how long a stream spends on one word: a word of about 0.6 s and the mean gap."""
    return sum(gap_ms) / 2000 + 0.6


def choose_events(
    clips: Sequence[SourceClip],
    seconds: float,
    keyword_share: float,
    mean_slot_seconds: float,
    rng: np.random.Generator,
    *,
    even_words: bool = True,
) -> list[SourceClip]:
    """Pick the clips of a stream of about ``seconds``: ``keyword_share`` of them keywords.

    Each pick takes about ``mean_slot_seconds`` (a word and its gap). Clips are drawn without
    repeats while they last, so a short split gives a shorter stream, never a repeated clip.

    :param even_words: draw words evenly (in rounds: every word that has a clip left once per
        round, in a random order), then a clip not yet drawn of each, so the mix of
        confusables, fillers and other speech is a property of the stream, not of how many
        clips the dataset holds of each word (``[data.synth] confusable_repeats`` gives a
        confusable three times the clips of a filler). ``False`` draws clips evenly, so words
        come as often as the data holds them (the training stream's examples).
    """
    total = max(1, round(seconds / mean_slot_seconds))
    keywords = [c for c in clips if c.kind == "keyword"]
    others = [c for c in clips if c.kind != "keyword"]
    want_keywords = min(len(keywords), round(total * keyword_share))
    want_others = min(len(others), total - want_keywords)
    draw = _even_by_word if even_words else _even_by_clip
    chosen = draw(keywords, want_keywords, rng) + draw(others, want_others, rng)
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _even_by_clip(
    clips: Sequence[SourceClip], count: int, rng: np.random.Generator
) -> list[SourceClip]:
    return [clips[i] for i in rng.permutation(len(clips))[:count]]


def _even_by_word(
    clips: Sequence[SourceClip], count: int, rng: np.random.Generator
) -> list[SourceClip]:
    """``count`` clips in rounds: each round takes one clip not yet taken of every word that has
    one left, the words in a random order, so every word comes equally often while it lasts."""
    by_word: dict[str, list[SourceClip]] = {}
    for clip in clips:
        by_word.setdefault(clip.word, []).append(clip)
    queues = [_even_by_clip(by_word[w], len(by_word[w]), rng) for w in sorted(by_word)]
    chosen: list[SourceClip] = []
    while len(chosen) < count:
        live = [q for q in queues if q]
        chosen += [live[i].pop() for i in rng.permutation(len(live))[: count - len(chosen)]]
    return chosen


def build_stream(
    clips: Sequence[SourceClip],
    background: Sequence[np.ndarray],
    rng: np.random.Generator,
    sample_rate: int = 16000,
    gap_ms: tuple[float, float] = (1200.0, 2500.0),
    background_volume: float = 0.1,
    root: Path | None = None,
) -> Stream:
    """Place ``clips`` one after another on a background, each after a random gap.

    :param clips: in the order they are placed.
    :param background: noise recordings (float32); the background is made of random pieces of
        them, each at a random volume up to ``background_volume``. Empty means digital silence.
    :param gap_ms: the range of the silence between one word's end and the next one's start
        (the stream starts and ends with such a gap).
    :param root: file names in the events are made relative to it.
    :raises DataError: a clip cannot be read.
    """
    words = []
    for clip in clips:
        try:
            audio = read_clip(clip.path, sample_rate).audio
        except UnusableAudio as exc:
            raise DataError(f"stream clip {clip.path} is unusable: {exc}") from None
        start, end = speech_extent(audio, sample_rate)
        if end <= start:
            continue  # nothing spoken in it
        margin = sample_rate * MARGIN_MS // 1000
        lo, hi = max(0, start - margin), min(len(audio), end + margin)
        piece = audio[lo:hi].copy()
        fade = min(sample_rate * FADE_MS // 1000, len(piece) // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
        words.append((clip, piece, start - lo, end - lo))
    gaps = [rng.uniform(*gap_ms) / 1000 for _ in range(len(words) + 1)]
    total = int(sum(gaps) * sample_rate) + sum(len(piece) for _, piece, _, _ in words)
    audio = _background(background, total, rng, sample_rate, background_volume)
    events = []
    position = 0
    for (clip, piece, speech_start, speech_end), gap in zip(words, gaps, strict=False):
        position += int(gap * sample_rate)
        audio[position : position + len(piece)] += piece
        name = clip.path
        if root is not None and clip.path.is_relative_to(root):
            name = clip.path.relative_to(root)
        events.append(
            Event(
                word=clip.word,
                kind=clip.kind,
                start_ms=1000 * (position + speech_start) / sample_rate,
                end_ms=1000 * (position + speech_end) / sample_rate,
                file=str(name),
            )
        )
        position += len(piece)
    return Stream(np.clip(audio, -1.0, 1.0).astype(np.float32), sample_rate, events)


def background_recordings(root: Path, sample_rate: int) -> list[np.ndarray]:
    """The dataset's ``_background_noise_`` recordings (unreadable ones are left out: the data
    stage lists them already)."""
    folder = Path(root) / BACKGROUND_NOISE_DIR
    recordings = []
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        try:
            recordings.append(read_clip(path, sample_rate).audio)
        except UnusableAudio:
            continue
    return recordings


def _background(
    recordings: Sequence[np.ndarray],
    total: int,
    rng: np.random.Generator,
    sample_rate: int,
    volume: float,
) -> np.ndarray:
    """Random pieces (2-10 s) of the recordings, each at a random volume, cross-faded."""
    out = np.zeros(total, dtype=np.float32)
    usable = [r for r in recordings if len(r) > sample_rate]
    if not usable or volume <= 0:
        return out
    position = 0
    fade = sample_rate // 20
    while position < total:
        noise = usable[int(rng.integers(len(usable)))]
        length = min(int(rng.uniform(2, 10) * sample_rate), len(noise), total - position)
        start = int(rng.integers(0, len(noise) - length + 1))
        piece = noise[start : start + length] * rng.uniform(0, volume)
        ramp = np.ones(length, dtype=np.float32)
        edge = min(fade, length // 2)
        if edge:
            ramp[:edge] = np.linspace(0, 1, edge)
            ramp[-edge:] = np.linspace(1, 0, edge)
        out[position : position + length] += piece * ramp
        position += max(length - edge, 1)
    return out
