"""Build the synthetic dataset: plan speakers and clips, synthesise in worker processes, write.

espeak-ng keeps state between utterances (the phase of its pitch flutter runs on), so the same
call gives slightly different samples depending on what the process spoke before. Each speaker
is therefore made in a fresh worker process  that never spoke before, in
a fixed order: the files then depend on the seed alone, never on how work was spread over cores.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress.config import SynthConfig
from kwscompress.data.splits import which_set
from kwscompress.data.synth import confusables, effects, noise
from kwscompress.data.synth.voices import (
    FAMILIES,
    Speaker,
    clip_seed,
    held_out_families,
    plan_speakers,
)
from kwscompress.errors import KwsError
from kwscompress.run import ensure_dir, remove_stale_temps, write_json

FILLER_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "down",
    "eight",
    "five",
    "four",
    "go",
    "happy",
    "house",
    "left",
    "marvin",
    "nine",
    "off",
    "on",
    "one",
    "right",
    "seven",
    "sheila",
    "six",
    "stop",
    "three",
    "tree",
    "two",
    "up",
    "wow",
    "zero",
    "backward",
    "forward",
    "follow",
    "learn",
    "visual",
)
"""Words of the real Speech Commands v0.02 vocabulary spoken as ``_unknown_`` fillers."""

MANIFEST = "synth_manifest.json"
BACKGROUND_DIR = "_background_noise_"
_PUNCTUATION = ("", ".", "!", "?", ",")
PRONUNCIATIONS = {
    "yes": ("j'Es", "j'as", "j'Is", "j'es"),
    "no": ("n'oU", "n'@U", "n'o:", "n'O:"),
}
"""espeak phoneme spellings of some words, spoken instead of the text in half the clips.

Each accent has one vowel per word; mixing spellings through every accent's phoneme table
teaches the word rather than one accent's vowel (held-out accents are the check). A spelling
must sound like its word, not like another: ``n'VU`` was dropped (generator version 6) because
five of the eight accents' phoneme tables say it closer to their own "now" than to their "no",
so it taught the model that "now" is "no" (:doc:`/rejection`).
"""


GENERATOR_VERSION = 6
"""Bumped whenever the same settings start producing different files (part of the cache key)."""


def generator_fingerprint(config: SynthConfig) -> str:
    """What besides the settings decides the output: this generator, the espeak-ng build and,
    when some speakers use it, the Flite build (an error naming the missing library if there
    is none)."""
    from kwscompress.data.synth.espeak import espeak_version
    from kwscompress.data.synth.flite import flite_fingerprint

    engines = (
        f"{espeak_version()}/{flite_fingerprint()}" if config.flite_share else espeak_version()
    )
    return f"{GENERATOR_VERSION}/{engines}"


def filler_words(wanted_words: Sequence[str]) -> list[str]:
    """The filler words, without the wanted ones (a wanted word is never ``_unknown_``)."""
    return [word for word in FILLER_WORDS if word not in set(wanted_words)]


def confusable_map(config: SynthConfig, wanted_words: Sequence[str]) -> dict[str, list[str]]:
    """Each wanted word's confusable words (:func:`~kwscompress.data.synth.confusables.
    confusable_words`), never a wanted word."""
    return {
        word: confusables.confusable_words(word, config.confusables, exclude=wanted_words)
        for word in wanted_words
    }


def unknown_words(config: SynthConfig, wanted_words: Sequence[str]) -> dict[str, int]:
    """Every ``_unknown_`` folder with its clips per speaker: fillers, then confusables (a
    filler that is also a confusable gets the larger count), then the kinds of other speech."""
    counts = dict.fromkeys(filler_words(wanted_words), config.unknown_repeats)
    for words in confusable_map(config, wanted_words).values():
        for word in words:
            counts[word] = max(counts.get(word, 0), config.confusable_repeats)
    for kind in confusables.OTHER_SPEECH:
        if kind not in wanted_words:
            counts[kind] = config.other_speech_repeats
    return {word: count for word, count in counts.items() if count > 0}


def planned_clip_count(config: SynthConfig, wanted_words: Sequence[str]) -> int:
    """Number of word clips :func:`synthesize` writes (the total of its progress calls)."""
    per_speaker = len(wanted_words) * config.repeats
    per_speaker += sum(unknown_words(config, wanted_words).values())
    return config.speakers * per_speaker


def synthesize(
    out_dir: Path,
    config: SynthConfig,
    wanted_words: Sequence[str],
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a synthetic dataset in the Speech Commands v0.02 layout to ``out_dir``.

    ``out_dir`` must not exist yet: the set is built in a temporary folder beside it and renamed
    into place at the end, so an interrupted run leaves nothing behind. The files are a pure
    function of the arguments (``workers`` only changes the speed). ``progress`` is called with
    the number of clips finished; ``workers`` defaults to the cores this process may use.
    Returns a JSON-ready summary.
    """
    out_dir = Path(out_dir)
    _check(out_dir, config, wanted_words)
    start = time.perf_counter()
    speakers = plan_speakers(
        config.seed,
        config.speakers,
        validation_percentage,
        testing_percentage,
        config.flite_share,
        config.flite_voices,
    )
    words = list(wanted_words) + list(unknown_words(config, wanted_words))
    ensure_dir(out_dir.parent, "dataset folder")
    remove_stale_temps(out_dir.parent)  # left by a process that was killed outright
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for word in words:
            (tmp / word).mkdir(parents=True)
        (tmp / BACKGROUND_DIR).mkdir()
        held_out = held_out_families(config.seed, testing_percentage)
        noise_jobs = _noise_jobs(config, wanted_words, held_out, tmp)
        # Noise first: the babble recording is the longest job, best not left for last.
        jobs: list[_SpeakerJob | _NoiseJob] = [*noise_jobs]
        jobs += [_speaker_job(speaker, config, wanted_words, words, tmp) for speaker in speakers]
        workers = workers or len(os.sched_getaffinity(0))
        clip_names = _run(jobs, workers, progress)
        lists = _write_lists(tmp, clip_names, validation_percentage, testing_percentage)
        manifest = _manifest(
            config,
            wanted_words,
            words,
            speakers,
            validation_percentage,
            testing_percentage,
            len(clip_names),
            [{"file": job.name, "kind": job.kind} for job in noise_jobs],
        )
        write_json(tmp / MANIFEST, manifest)
        try:
            os.rename(tmp, out_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise KwsError(
                f"synthetic dataset folder {out_dir} was created by another process meanwhile; "
                "choose a new one"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    return {
        "path": str(out_dir),
        "clips": len(clip_names),
        "words": words,
        "speakers": len(speakers),
        "voice_variants": len({s.voice for s in speakers}),
        "flite_speakers": sum(s.engine == "flite" for s in speakers),
        "held_out_families": manifest["held_out_families"],
        "held_out_speakers": sum(s.held_out for s in speakers),
        "splits": lists,
        "background_noise_files": config.noise_files,
        "seconds": round(seconds, 3),
        "clips_per_second": round(len(clip_names) / seconds, 1),
        "workers": workers,
    }


def _check(out_dir: Path, config: SynthConfig, wanted_words: Sequence[str]) -> None:
    if out_dir.exists():
        raise KwsError(f"synthetic dataset folder {out_dir} exists already; choose a new one")
    if not wanted_words:
        raise KwsError("[data] wanted_words is empty; name at least one word, e.g. yes")
    for key in ("speakers", "repeats"):
        if getattr(config, key) < 1:
            raise KwsError(f"[data.synth] {key} must be at least 1, not {getattr(config, key)}")
    for key in ("unknown_repeats", "noise_files"):
        if getattr(config, key) < 0:
            raise KwsError(f"[data.synth] {key} must be 0 or more, not {getattr(config, key)}")
    if config.noise_files and config.noise_seconds < 1:
        raise KwsError(f"[data.synth] noise_seconds must be at least 1, not {config.noise_seconds}")
    bad = [w for w in wanted_words if not w or "/" in w or w.startswith("_")]
    if bad:
        raise KwsError(f"[data] wanted_words has invalid folder names {bad}; use plain words")


@dataclass(frozen=True)
class _SpeakerJob:
    """Every clip of one speaker: ``(word, repeat, relative file name)`` in a fixed order."""

    seed: int
    speaker: Speaker
    clips: tuple[tuple[str, int, str], ...]
    root: str
    speech_words: tuple[str, ...] = ()
    """Words that phrases and fragments of other speech are made of."""
    wanted: tuple[str, ...] = ()

    def __call__(self) -> None:
        speak = _flite_speech if self.speaker.engine == "flite" else _espeak_speech
        for word, repeat, name in self.clips:
            rng = np.random.default_rng(clip_seed(self.seed, self.speaker.speaker_id, word, repeat))
            text, keep = word, 1.0
            if word in confusables.OTHER_SPEECH and word not in self.wanted:
                text, keep = confusables.other_speech(word, rng, self.speech_words, self.wanted)
            audio = _clip(speak, self.speaker, text, rng, keep)
            _write_wav(Path(self.root) / name, effects.to_int16(audio))

    def names(self) -> list[str]:
        """The clip files this job writes."""
        return [name for _, _, name in self.clips]

    def describe(self) -> str:
        """The job, for error messages."""
        return f"speaker {self.speaker.speaker_id} (voice {self.speaker.voice})"


@dataclass(frozen=True)
class _NoiseJob:
    """One background noise recording."""

    seed: int
    index: int
    kind: str
    seconds: float
    babble_words: tuple[str, ...]
    babble_families: tuple[str, ...]
    name: str
    root: str

    def __call__(self) -> None:
        rng = np.random.default_rng([self.seed, 0xBAC6, self.index])
        n = int(self.seconds * effects.SAMPLE_RATE)
        audio = noise.background(
            self.kind,
            rng,
            n,
            lambda m: _babble(rng, m, list(self.babble_words), self.babble_families),
        )
        _write_wav(Path(self.root) / self.name, effects.to_int16(audio))

    def names(self) -> list[str]:
        """Word clips this job writes: none (noise is not a clip)."""
        return []

    def describe(self) -> str:
        """The job, for error messages."""
        return f"background noise {self.name}"


def _speaker_job(
    speaker: Speaker, config: SynthConfig, wanted: Sequence[str], words: list[str], root: Path
) -> _SpeakerJob:
    clips = []
    unknown = unknown_words(config, wanted)
    for word in words:
        repeats = config.repeats if word in wanted else unknown[word]
        for repeat in range(repeats):
            clips.append((word, repeat, f"{word}/{speaker.speaker_id}_nohash_{repeat}.wav"))
    speech_words = tuple(w for w in unknown if w not in confusables.OTHER_SPEECH)
    return _SpeakerJob(config.seed, speaker, tuple(clips), str(root), speech_words, tuple(wanted))


def _noise_jobs(
    config: SynthConfig, wanted: Sequence[str], held_out: Sequence[str], root: Path
) -> list[_NoiseJob]:
    kinds = noise.BACKGROUND_KINDS
    return [
        _NoiseJob(
            seed=config.seed,
            index=index,
            kind=kinds[index % len(kinds)],
            seconds=config.noise_seconds,
            babble_words=tuple(filler_words(wanted)),
            babble_families=tuple(f for f in FAMILIES if f not in held_out),
            name=f"{BACKGROUND_DIR}/{kinds[index % len(kinds)]}_noise_{index // len(kinds)}.wav",
            root=str(root),
        )
        for index in range(config.noise_files)
    ]


def _run(
    jobs: Sequence[_SpeakerJob | _NoiseJob],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[str]:
    # One forked process per job, at most ``workers`` at a time. fork: workers need no
    # importable __main__ (scripts without a main guard work) and start in milliseconds; they
    # only run numpy, scipy and espeak-ng. Each job's file names are known in advance, so a
    # process reports through its exit status alone, and one that dies (espeak-ng can crash on
    # some voice and text pairs) is an error naming the job instead of a pool waiting forever.
    #
    # Interrupts are the parent's alone: workers ignore SIGINT (Ctrl-C reaches the whole process
    # group), the parent stops them in ``finally``, and a worker dies with its parent even when
    # the parent is killed outright (PR_SET_PDEATHSIG). Signals are blocked around each fork, so
    # one arriving then is neither taken by a worker half set up nor lost between fork and
    # bookkeeping: it is delivered to the parent right after.
    context = multiprocessing.get_context("fork")
    pending = list(jobs)
    running: dict[int, tuple[Any, _SpeakerJob | _NoiseJob]] = {}
    names: list[str] = []
    parent = os.getpid()
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                job = pending.pop(0)
                process = context.Process(target=_worker, args=(job, parent))
                with _signals_blocked():
                    process.start()
                    running[process.sentinel] = (process, job)
            for sentinel in multiprocessing.connection.wait(list(running)):
                process, job = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    code = process.exitcode
                    raise KwsError(f"synthesis of {job.describe()} failed (exit status {code})")
                done = job.names()
                names.extend(done)
                if done and progress is not None:
                    progress(len(done))
    finally:
        for process, _ in running.values():
            process.kill()
            process.join()
    return sorted(names)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


@contextmanager
def _signals_blocked() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker(job: _SpeakerJob | _NoiseJob, parent: int) -> None:
    """A worker's life: quiet on Ctrl-C, dead with its parent, then the job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the command line's handler
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    job()


def _espeak_speech(speaker: Speaker, word: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``word`` (or ``[[phonemes]]``) spoken by an espeak-ng speaker, trimmed, and its rate."""
    from kwscompress.data.synth.espeak import engine

    espeak = engine()
    text = word
    if word in PRONUNCIATIONS and rng.random() < 0.5:
        text = f"[[{rng.choice(PRONUNCIATIONS[word])}]]"
    spoken = text + _PUNCTUATION[int(rng.integers(len(_PUNCTUATION)))]
    rate = int(np.clip(speaker.rate * np.exp(rng.normal(0, 0.12)), 80, 320))
    pitch = int(np.clip(speaker.pitch + rng.normal(0, 8), 0, 100))
    pitch_range = int(np.clip(speaker.pitch_range + rng.normal(0, 12), 0, 100))
    noise_seed = int(rng.integers(2**31))
    x = np.zeros(0, np.float32)
    while x.size == 0 and rate >= 40:
        # Some voices say nothing for some words at very fast rates: slow down until they do.
        raw = espeak.synth(
            spoken,
            speaker.voice,
            rate=rate,
            pitch=pitch,
            pitch_range=pitch_range,
            noise_seed=noise_seed,
        )
        x = effects.trim(raw)
        rate = rate * 3 // 4
    if x.size == 0:
        raise KwsError(f"espeak-ng says nothing for {spoken!r} with voice {speaker.voice!r}")
    return x, espeak.sample_rate


def _flite_speech(speaker: Speaker, word: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``word`` (or ``[[phonemes]]``, spoken as Flite phones) spoken by a Flite speaker, trimmed,
    and its rate. The speaker's rate in words per minute becomes Flite's duration stretch
    against espeak-ng's default of 175."""
    from kwscompress.data.synth import flite

    rate = float(np.clip(speaker.rate * np.exp(rng.normal(0, 0.12)), 80, 320))
    if word.startswith("[["):
        text, phones = flite.flite_phones(word.strip("[]")), True
    else:
        text, phones = word + _PUNCTUATION[int(rng.integers(len(_PUNCTUATION)))], False
    seed = int(rng.integers(2**31))
    x = effects.trim(
        flite.engine().synth(
            text, speaker.voice, duration_stretch=175 / rate, phones=phones, seed=seed
        )
    )
    if x.size == 0:
        raise KwsError(f"Flite says nothing for {text!r} with voice {speaker.voice!r}")
    return x, flite.SAMPLE_RATE


def _clip(
    speak: Callable[[Speaker, str, np.random.Generator], tuple[np.ndarray, int]],
    speaker: Speaker,
    word: str,
    rng: np.random.Generator,
    keep: float = 1.0,
) -> np.ndarray:
    """One recording of ``word`` by ``speaker``, as float audio of exactly one second.

    ``speak`` is the speaker's engine (:func:`_espeak_speech` or :func:`_flite_speech`).
    ``keep`` below 1 keeps only that first share of the spoken word (a fragment).
    """
    x, source_rate = speak(speaker, word, rng)
    if keep < 1.0:
        x = effects.trim(x[: max(1, int(x.size * keep))])
    x = effects.resample(x, source_rate, speaker.formant_shift * np.exp(rng.normal(0, 0.03)))
    x = effects.microphone(
        x,
        speaker.highpass_hz * np.exp(rng.normal(0, 0.2)),
        speaker.lowpass_hz * np.exp(rng.normal(0, 0.1)),
        order=int(rng.integers(1, 4)),
    )
    if rng.random() < 0.3:
        x = effects.equalize(x, rng, bands=int(rng.integers(1, 3)))
    if rng.random() < speaker.reverb:
        x = effects.reverberate(x, rng)
    clip = effects.place(x, rng)
    clip = effects.set_peak(clip, min(speaker.level_db + rng.normal(0, 4), 1.0))
    snr = float(np.clip(speaker.snr_db + rng.normal(0, 4), 10, 60))
    # Real recordings never go below a few LSB of hiss, however clean the speech.
    floor_db = max(20 * np.log10(effects.active_rms(clip) + 1e-12) - snr, rng.uniform(-86, -70))
    floor = noise.recording_floor(rng, clip.size) * 10 ** (floor_db / 20)
    dc_offset = rng.normal(0, 0.0005)  # cheap converters are a little off centre
    return np.clip(clip + floor + dc_offset, -1.0, 1.0)


def _babble(
    rng: np.random.Generator, n: int, words: list[str], families: Sequence[str]
) -> np.ndarray:
    """Several voices talking at once: filler words only, never a held-out accent."""
    from kwscompress.data.synth.espeak import engine
    from kwscompress.data.synth.voices import voice_variants

    espeak = engine()
    out = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(5, 9))):
        voice = f"{rng.choice(families)}+{rng.choice(voice_variants())}"
        stream = []
        length = 0
        while length < n:
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 9))))
            raw = espeak.synth(
                text,
                voice,
                rate=int(rng.integers(130, 230)),
                pitch=int(rng.integers(10, 90)),
                pitch_range=50,
                noise_seed=int(rng.integers(2**31)),
            )
            speech = effects.resample(raw, espeak.sample_rate, float(rng.uniform(0.9, 1.1)))
            gap = np.zeros(int(rng.uniform(0.05, 0.6) * effects.SAMPLE_RATE), dtype=np.float32)
            stream += [speech, gap]
            length += speech.size + gap.size
        voice_audio = np.concatenate(stream)[:n]
        out += voice_audio * rng.uniform(0.3, 1.0) / max(float(voice_audio.std()), 1e-9)
    return out


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(effects.SAMPLE_RATE)
        handle.writeframes(samples.astype("<i2").tobytes())


def _write_lists(root: Path, names: list[str], validation: float, testing: float) -> dict:
    splits: dict[str, list[str]] = {"training": [], "validation": [], "testing": []}
    for name in names:
        splits[which_set(name, validation, testing)].append(name)
    for split in ("validation", "testing"):
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in splits[split]))
    return {split: len(files) for split, files in splits.items()}


def _manifest(
    config: SynthConfig,
    wanted: Sequence[str],
    words: list[str],
    speakers: list[Speaker],
    validation: float,
    testing: float,
    clips: int,
    background: list[dict[str, str]],
) -> dict[str, Any]:
    from kwscompress.data.synth.espeak import espeak_version
    from kwscompress.data.synth.flite import flite_fingerprint
    from kwscompress.data.synth.voices import voice_variants

    return {
        "format": 1,
        "generator": f"kwscompress.data.synth (espeak-ng{', Flite' if config.flite_share else ''})",
        "seed": config.seed,
        "settings": {
            **asdict(config),
            "wanted_words": list(wanted),
            "validation_percentage": validation,
            "testing_percentage": testing,
            "sample_rate": effects.SAMPLE_RATE,
        },
        "words": {
            "wanted": list(wanted),
            "fillers": words[len(wanted) :],
            "confusables": confusable_map(config, wanted),
            "other_speech": [w for w in confusables.OTHER_SPEECH if w in words],
        },
        "clips": clips,
        "held_out_families": held_out_families(config.seed, testing),
        "voice_variants_available": len(voice_variants()),
        "speakers": [speaker.to_json() for speaker in speakers],
        "background_noise": background,
        "espeak_ng": espeak_version(),
        "flite": flite_fingerprint() if config.flite_share else None,
    }
