"""Typed configuration: defaults, TOML loading and validation that names the key at fault.

The config has one table per stage. Every key is documented in :doc:`/configuration`; the
defaults are the values below. A key that does not exist, a value of the wrong type, a number
outside its range (:data:`LIMITS`), or a word list that breaks :data:`LABEL_RULE` raises
:class:`~kwscompress.errors.ConfigError` naming the file and the key and saying what is valid, when
the config loads: before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwscompress.errors import ConfigError


@dataclass
class RunConfig:
    """``[run]``: where results go."""

    name: str = "kws"
    """Name of the run; the run directory is ``out_dir/name``."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    cache_dir: str = ""
    """Cache for datasets and features; empty means ``$KWSCOMPRESS_CACHE`` or
    ``~/.cache/kwscompress``."""


@dataclass
class SynthConfig:
    """``[data.synth]``: the embedded synthetic Speech Commands (espeak-ng)."""

    seed: int = 1234
    """Seed of every random choice; the same seed gives the same files."""
    speakers: int = 128
    """Speakers, each a distinct voice variant, accent and set of recording conditions."""
    repeats: int = 10
    """Clips per speaker for each wanted word."""
    unknown_repeats: int = 1
    """Clips per speaker for each filler (``_unknown_``) word."""
    confusables: int = 10
    """Confusable words per wanted word (rhymes and one-phoneme neighbours, found by the rule
    of :mod:`kwscompress.data.synth.confusables`), spoken as ``_unknown_``."""
    confusable_repeats: int = 3
    """Clips per speaker for each confusable word. Three instead of one (on the data of
    generator version 5, seeds 0-2): confusables rejected 84.0 against 77.5 %, at the same test
    accuracy, and 10 points fewer test-stream misses at equal false accepts per hour
    (:doc:`/rejection`)."""
    other_speech_repeats: int = 1
    """Clips per speaker of each kind of other speech (``_unknown_``): a two-word phrase, a
    word fragment and a non-word."""
    flite_share: float = 0.0
    """Share of the training speakers who speak with one of Flite's voices, cut from recordings
    of real speakers, instead of espeak-ng (:mod:`kwscompress.data.synth.flite`; needs the
    Debian package ``libflite1``). Off by default: measured, it helps keywords spoken by an
    unseen Flite voice but costs rejection of confusable words (:doc:`/rejection`)."""
    flite_voices: list[str] = field(default_factory=lambda: ["awb", "rms", "slt", "kal16"])
    """The Flite voices those speakers take in turn (of ``awb``, ``rms``, ``slt``, ``kal16``);
    leaving one out keeps it for a test of a voice no training clip had
    (``benchmarks/bench_other_engine.py``)."""
    noise_files: int = 6
    """Background noise recordings written to ``_background_noise_``."""
    noise_seconds: float = 30.0
    """Length of each background noise recording."""


@dataclass
class DataConfig:
    """``[data]``: which clips, which classes, which split and augmentation."""

    source: str = "synthetic"
    """Dataset source: ``synthetic`` (generated offline) or ``speech_commands`` (uses ``root``)."""
    root: str = ""
    """Folder in the Speech Commands layout (for ``speech_commands``)."""
    wanted_words: list[str] = field(default_factory=lambda: ["yes", "no"])
    """Words to recognise; every other word folder becomes ``_unknown_``."""
    silence_percentage: float = 25.0
    """``_silence_`` clips per split, as a percentage of the wanted-word clips."""
    unknown_percentage: float = 100.0
    """``_unknown_`` clips per split, as a percentage of the wanted-word clips (as many as the
    keywords: rejection needs many and varied other words; ``[train] class_weights`` keeps the
    classes balanced in the loss)."""
    validation_percentage: float = 10.0
    """Share of speakers in validation (hash split rule)."""
    testing_percentage: float = 10.0
    """Share of speakers in testing (hash split rule)."""
    sample_rate: int = 16000
    """Sample rate the model hears; other files are resampled."""
    clip_duration_ms: int = 1000
    """Clip length; shorter files are zero-padded, longer ones cut."""
    time_shift_ms: float = 100.0
    """Training clips are shifted by up to this much either way (never validation or test)."""
    background_frequency: float = 0.8
    """Share of training clips mixed with background noise."""
    background_volume: float = 0.1
    """Largest background noise volume mixed into a training clip."""
    speed_frequency: float = 0.3
    """Share of training word clips played faster or slower (resampled: tempo and pitch)."""
    speed_min: float = 0.85
    """Slowest speed factor of that augmentation."""
    speed_max: float = 1.25
    """Fastest speed factor of that augmentation."""
    band_limit_frequency: float = 0.2
    """Share of training clips band-limited: a telephone band (300-3400 Hz) or an 8 kHz
    recording (4 kHz low-pass), half each."""
    level_db: float = 10.0
    """Training clips are scaled by a random gain of up to this many dB either way."""
    augment_copies: int = 6
    """Augmented versions of each training clip whose features are computed (and cached)."""
    redraw_unknown: bool = True
    """Each augmented training copy after the first fills its ``_unknown_`` places with the next
    clips of the training speakers' whole ``_unknown_`` pool, not the same sampled ones again:
    as many ``_unknown_`` examples per epoch, from all the other words the speakers said."""
    stream_examples: float = 0.5
    """Training examples cut from a continuous stream of the training speakers' words, as a
    share of the training clips (0: none): keywords wholly inside a window, other words whole
    or cut at its edges, through a running frontend, as the device hears them
    (:mod:`kwscompress.stream.training`)."""
    seed: int = 59185
    """Seed of silence/unknown sampling and augmentation."""
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class FeatureConfig:
    """``[features]``: what the model hears."""

    name: str = "micro"
    """Feature extractor: ``micro`` (the device's frontend), ``spectrogram``, ``mel``, ``mfcc``."""
    window_ms: float = 30.0
    """Analysis window."""
    stride_ms: float = 20.0
    """Hop between windows."""
    bins: int = 40
    """Feature bins per frame (filterbank channels, mel bands or cepstral coefficients)."""
    warmup_ms: int = 1000
    """Audio the ``micro`` frontend hears before each clip, so that its noise estimate and gain
    control have settled as on the device, where the frontend never restarts (the clip's own
    quietest 200 ms, repeated; its frames are dropped). 0 starts every clip afresh, as TFLM's
    training scripts do. The stateless extractors ignore it. See :doc:`/rejection`."""


@dataclass
class ModelConfig:
    """``[model]``: the architecture."""

    name: str = "tc_ds_cnn"
    """Model: ``tc_ds_cnn`` (temporal DS-CNN, the default), ``tiny_conv`` (TFLM micro_speech's
    model) or ``ds_cnn`` (DS-CNN small); see :mod:`kwscompress.models`."""


@dataclass
class TrainConfig:
    """``[train]``: optimisation."""

    epochs: int = 80
    """Passes over the training set (80 x 66 batches is about 5,300 steps on the demo's set; the
    default ``tc_ds_cnn`` reaches its best validation accuracy after 60 to 80; ``tiny_conv``
    needs more, about 170, and TFLM's own recipe for it takes 18,000 steps)."""
    batch_size: int = 100
    """Clips per step."""
    learning_rate: float = 0.001
    """Adam's initial learning rate."""
    lr_step_epochs: int = 60
    """The learning rate is multiplied by ``lr_gamma`` every this many epochs."""
    lr_gamma: float = 0.1
    """Learning-rate decay factor."""
    weight_decay: float = 0.0001
    """Adam's L2 penalty."""
    class_weights: str = "balanced"
    """``balanced``: each class's loss is weighted by ``clips / (classes * clips of the class)``,
    so every class counts the same however many clips it has (``_unknown_`` has many more than
    a keyword); ``none``: plain cross-entropy."""
    freq_warp: float = 0.1
    """Frequency warping of the training features: each example of each batch has its bins
    stretched or squeezed by a factor drawn from ``1 +- freq_warp`` (vocal tract length
    perturbation, :func:`kwscompress.train.warp_frequency`), so the model meets more voices
    than the dataset has; 0 turns it off."""
    mixup: float = 0.0
    """mixup: each training example is blended with another of its batch, ``share * a + (1 -
    share) * b``, and the loss with their two labels the same way, with ``share`` drawn per
    batch from Beta(mixup, mixup); 0 (the default) turns it off. It raises clip accuracy
    but lowers the stream's detection and 4-bit PTQ accuracy (:doc:`/training`)."""
    word_head: float = 0.25
    """Weight of the word head's loss: a linear layer beside the model's classifier learns which
    word each training example says (every word folder and silence a class), which teaches the
    model's features to tell the words it lumps into ``_unknown_`` apart from the keywords; it
    is dropped after training (:mod:`kwscompress.word_head`, :doc:`/training`). 0 turns it off.
    Fine-tuning (compression) trains without it."""
    label_smoothing: float = 0.1
    """Label smoothing of the class loss (PyTorch's ``cross_entropy(label_smoothing=...)``): each
    example's target keeps ``1 - label_smoothing`` on its own class and spreads the rest evenly
    over all classes, so the model is not driven to full certainty on clips that sound alike.
    It raised test accuracy and 4-bit PTQ accuracy (:doc:`/training`); 0 turns it off.
    Fine-tuning (compression) uses it too."""
    seed: int = 0
    """Seed of weight initialisation, dropout and batch order."""


@dataclass
class EstimateConfig:
    """``[estimate]``: static cost analysis against a board."""

    board: str = "nano33ble"
    """Board profile to check the fit against (``kwscompress estimate --help`` lists them)."""
    bits: list[int] = field(default_factory=lambda: [32, 8])
    """Weight bit widths to check the fit for."""
    estimator: str = "fvcore"
    """Estimator component."""


@dataclass
class ProfileConfig:
    """``[profile]``: host latency measurement."""

    runs: int = 200
    """Timed batch-1 forward passes (after warm-up); the median is reported."""
    warmup: int = 20
    """Untimed passes first."""
    threads: int = 1
    """CPU threads for the measurement (recorded in the results); one is the stable choice for a
    batch-1 model on a busy machine, where extra threads wait on each other."""


def _default_recipes() -> list[RecipeConfig]:
    return [
        RecipeConfig("ptq", [{"kind": "quantize", "method": "ptq", "bits": [2, 4, 6, 8, "w4a8"]}]),
        RecipeConfig(
            "qat",
            [
                {
                    "kind": "quantize",
                    "method": "qat",
                    "bits": [2, 4, 6, 8],
                    "learning_rate": 0.00001,
                }
            ],
        ),
        RecipeConfig(
            "magnitude",
            [
                {"kind": "prune", "method": "magnitude", "amount": [0.1, 0.3, 0.5, 0.7, 0.9]},
                {"kind": "finetune", "epochs": [0, 3]},
            ],
        ),
        RecipeConfig(
            "channel",
            [
                {"kind": "prune", "method": "channel", "amount": [0.1, 0.3, 0.5, 0.7, 0.9]},
                {"kind": "finetune", "epochs": [0, 3]},
            ],
        ),
        RecipeConfig(
            "channel-qat",
            [
                {"kind": "prune", "method": "channel", "amount": 0.5},
                {"kind": "finetune", "epochs": 3},
                {"kind": "quantize", "method": "qat", "bits": 8, "learning_rate": 0.00001},
            ],
        ),
    ]


@dataclass
class RecipeConfig:
    """One ``[[compress.recipes]]`` entry: a named, ordered list of steps.

    Each step is a table with ``kind`` (``prune``, ``finetune`` or ``quantize``), ``method``
    (the pruner or quantizer name; not for ``finetune``) and the method's settings. A setting
    given as a list is swept: the recipe expands into one variant per combination.
    """

    name: str = ""
    """Names the variants (``<name>-<settings>``) and groups them in the report."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    """The steps, applied in order to the trained float model."""


@dataclass
class CompressConfig:
    """``[compress]``: the compression sweep (see :doc:`/compression`)."""

    enabled: bool = True
    """Run the sweep as part of ``kwscompress run`` / ``demo``."""
    finetune_learning_rate: float = 0.001
    """Learning rate of fine-tuning epochs, and of QAT when its step sets none. Measured on the
    default demo: 3 epochs at 0.001 bring a 2-channel tiny_conv back from 12 % to 50 % test
    accuracy, where 0.0001 leaves it at 12 %; on the demo's ``tc_ds_cnn`` 0.001 is also the best
    of 0.001, 0.0003 and 0.0001 on validation after pruning (channel 0.5: 84.1, 83.0, 76.5 %;
    magnitude 0.5: 88.9, 88.7, 88.7 %). The default QAT recipes set their own 0.00001:
    on the demo's batch-norm-folded ``tc_ds_cnn`` it beat 0.0001 on validation at every width
    (8 bits 90.9 against 90.4 %, 4 bits 89.3 against 87.4 %, 2 bits 40.6 against 38.7 %; see
    :doc:`/quantization`)."""
    recipes: list[RecipeConfig] = field(default_factory=_default_recipes)
    """The recipes; the default sweeps PTQ and QAT at 2-8 bits, both pruners at 0.1-0.9 with and
    without fine-tuning, and one prune -> fine-tune -> QAT recipe."""


@dataclass
class SweepConfig:
    """``[sweep]``: where the variants of a sweep run (see :doc:`/compression`)."""

    executor: str = "local"
    """Executor component: ``local`` (this machine) or ``ray`` (a Ray cluster)."""
    workers: int = 0
    """Worker processes of the local executor: 0 (the default) starts one per CPU core, 1 runs
    the variants in this process. Each variant computes on one thread. Measured on the 2-core
    demo machine: the default sweep of ``tiny_conv`` took 65.6 s in this process and 19.1 s with
    2 workers; the default ``tc_ds_cnn`` sweep's 29 variants add up to 124-135 s of compute and
    take 62-67 s with 2 workers (69 s before variants started longest first)."""
    address: str = "auto"
    """Ray only: ``auto``, ``local`` or ``ray://host:port``."""
    num_cpus: float = 1.0
    """Ray only: CPUs reserved per variant."""
    num_gpus: float = 0.0
    """Ray only: GPUs reserved per variant (training and QAT then run on CUDA)."""
    retries: int = 2
    """Times a variant whose worker died is tried again before it is recorded as failed."""


@dataclass
class ExportConfig:
    """``[export]``: which variants become deployable files (see :doc:`/export`)."""

    enabled: bool = True
    """Export as part of ``kwscompress run`` / ``demo``."""
    variants: list[str] = field(
        default_factory=lambda: ["float", "ptq-8b", "qat-8b", "ptq-w4a8", "channel-*-ft3"]
    )
    """Variant ids to export (``float`` is the trained model); shell-style patterns such as
    ``channel-*-ft3`` select several. The default exports the float model, the 8-bit PTQ and QAT
    variants, one with 4-bit weights and 8-bit activations (packed weights on the MCU; TFLM's
    activations are int8 whatever their bits, so 4-bit ones would cost accuracy and save
    nothing) and the fine-tuned channel-pruned ones (Table 5's MCU column)."""
    exporters: list[str] = field(default_factory=lambda: ["onnx", "tflite"])
    """Exporter components to run on each variant (those that apply to it)."""
    workers: int = 0
    """Processes sharing the exports: 0 (the default) one per CPU core, 1 only this process.
    Helpers are spawned and import torch and TensorFlow first (about 10 s), so they pay for
    several variants only; see :doc:`/export`."""


@dataclass
class McuConfig:
    """``[mcu]``: flash, RAM and latency of exported int8 variants, measured without a board."""

    enabled: bool = True
    """Measure every exported int8 variant as part of ``kwscompress run`` / ``demo``."""
    runtime: str = "native"
    """MCU runtime component (``native``: generated C kernels on an emulated Cortex-M4)."""
    emulate_clips: int = 3
    """Test clips run in the emulated core (all test clips are checked on the host build)."""


@dataclass
class RecognizerConfig:
    """``[recognizer]``: the command recognizer on the device (TFLM micro_speech defaults)."""

    average_window_ms: int = 1000
    """Scores are averaged over this much past time."""
    detection_threshold: int = 200
    """Averaged score (0-255) a command must exceed."""
    suppression_ms: int = 1500
    """After a command fires, the same command stays quiet this long."""
    minimum_count: int = 3
    """Results the window must hold before anything fires."""


@dataclass
class StreamConfig:
    """``[stream]``: the streaming test and recognizer tuning (see :doc:`/rejection`)."""

    enabled: bool = True
    """Run the streaming evaluation as part of ``kwscompress run`` / ``demo``."""
    minutes: float = 30.0
    """Length of each stream (validation and test), at most what the split's clips fill. Half
    an hour resolves 2 false accepts per hour, so the threshold tuned for 1 per hour is chosen
    on evidence (ten minutes can only tell 0 from 6 or more)."""
    keyword_share: float = 0.3
    """Share of the stream's words that are wanted words; the rest are confusables, fillers and
    other speech of the same split's speakers, each word as often as the others (drawn by word,
    then clip, whatever number of clips the dataset holds of each)."""
    gap_min_ms: float = 1200.0
    """Shortest silence between one word's end and the next word's start."""
    gap_max_ms: float = 2500.0
    """Longest such silence."""
    background_volume: float = 0.1
    """Largest volume of the background noise pieces under the words."""
    slices_per_inference: int = 2
    """The model runs after every this many new 20 ms slices (1: every slice)."""
    tolerance_ms: float = 1000.0
    """A detection counts for a keyword when it comes between the word's start and this long
    after its end (see :mod:`kwscompress.stream.metrics`)."""
    target_false_accepts_per_hour: float = 1.0
    """The detection threshold is the one with the fewest misses on the validation stream among
    those at or below this many false accepts per hour."""
    tune: bool = True
    """Choose the detection threshold and averaging window on the validation stream; otherwise
    keep the ``[recognizer]`` settings."""
    average_windows_ms: list[int] = field(default_factory=lambda: [500, 750, 1000])
    """Averaging windows tried besides ``[recognizer] average_window_ms`` when tuning (one
    second of averaging needs a keyword confident for most of a second)."""
    seed: int = 0
    """Seed of the choice and placement of words and of the background."""
    save_audio: bool = False
    """Also write each stream's audio (``<run>/stream/<split>.wav``, 16-bit as the device's
    microphone delivers it) with its words and the chosen recognizer's detections as Audacity
    label files (``<split>.words.txt``, ``<split>.detections.txt``): about 58 MB a half-hour
    stream."""


@dataclass
class DeployConfig:
    """``[deploy]``: firmware rendered around exported models (see :doc:`/firmware`)."""

    enabled: bool = True
    """Render firmware as part of ``kwscompress run`` / ``demo``."""
    backend: str = "arduino"
    """Firmware backend component."""
    variants: list[str] = field(default_factory=lambda: ["qat-8b"])
    """Exported variant ids to render a project for."""
    profile: bool = False
    """Render the sketch with its ``PROFILE`` timing lines switched on (see :doc:`/firmware`)."""
    runtime: str = "tflm"
    """How the sketch runs the model: ``tflm`` (the TFLM interpreter) or ``native`` (C code
    generated by the ``kwscompress_native`` plugin; see :doc:`/firmware`). The backend checks
    the value."""


@dataclass(frozen=True)
class Limit:
    """The valid range of a numeric key; an open end excludes the bound itself."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low, high = _plain_number(self.low), _plain_number(self.high)
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _plain_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_SEED = Limit(0, 2**32 - 1)
LIMITS: dict[str, Limit] = {
    "data.synth.seed": _SEED,
    "data.synth.speakers": Limit(1, 100_000),
    "data.synth.repeats": Limit(1, 10_000),
    "data.synth.unknown_repeats": Limit(0, 10_000),
    "data.synth.confusables": Limit(0, 1_000),
    "data.synth.confusable_repeats": Limit(0, 10_000),
    "data.synth.other_speech_repeats": Limit(0, 10_000),
    "data.synth.flite_share": Limit(0, 1),
    "data.synth.noise_files": Limit(0, 1_000),
    "data.synth.noise_seconds": Limit(1, 3_600),
    "data.silence_percentage": Limit(0, 1_000),
    "data.unknown_percentage": Limit(0, 1_000),
    "data.validation_percentage": Limit(0, 100, high_open=True),
    "data.testing_percentage": Limit(0, 100, high_open=True),
    "data.sample_rate": Limit(4_000, 96_000),
    "data.clip_duration_ms": Limit(1, 60_000),
    "data.time_shift_ms": Limit(0, 60_000),
    "data.background_frequency": Limit(0, 1),
    "data.background_volume": Limit(0, 1),
    "data.augment_copies": Limit(1, 1_000),
    "data.stream_examples": Limit(0, 10),
    "data.speed_frequency": Limit(0, 1),
    "data.speed_min": Limit(0.5, 2),
    "data.speed_max": Limit(0.5, 2),
    "data.band_limit_frequency": Limit(0, 1),
    "data.level_db": Limit(0, 40),
    "data.seed": _SEED,
    "features.window_ms": Limit(1, 1_000),
    "features.stride_ms": Limit(1, 1_000),
    "features.bins": Limit(2, 512),
    "features.warmup_ms": Limit(0, 10_000),
    "train.epochs": Limit(1, 100_000),
    "train.batch_size": Limit(1, 100_000),
    "train.learning_rate": Limit(0, 10, low_open=True),
    "train.lr_step_epochs": Limit(1, 100_000),
    "train.lr_gamma": Limit(0, 1, low_open=True),
    "train.weight_decay": Limit(0, 1),
    "train.freq_warp": Limit(0, 0.25),
    "train.mixup": Limit(0, 10),
    "train.word_head": Limit(0, 100),
    "train.label_smoothing": Limit(0, 1, high_open=True),
    "train.seed": _SEED,
    "estimate.bits": Limit(1, 32),
    "profile.runs": Limit(1, 1_000_000),
    "profile.warmup": Limit(0, 1_000_000),
    "profile.threads": Limit(1, 1_024),
    "compress.finetune_learning_rate": Limit(0, 10, low_open=True),
    "sweep.workers": Limit(0, 1_024),
    "export.workers": Limit(0, 1_024),
    "sweep.num_cpus": Limit(0, 1_024, low_open=True),
    "sweep.num_gpus": Limit(0, 64),
    "sweep.retries": Limit(0, 100),
    "mcu.emulate_clips": Limit(0, 10_000),
    "recognizer.average_window_ms": Limit(1, 60_000),
    "recognizer.detection_threshold": Limit(0, 255),
    "recognizer.suppression_ms": Limit(0, 60_000),
    "recognizer.minimum_count": Limit(1, 1_000),
    "stream.minutes": Limit(0.1, 600),
    "stream.keyword_share": Limit(0, 1, low_open=True),
    "stream.gap_min_ms": Limit(0, 60_000),
    "stream.gap_max_ms": Limit(0, 60_000),
    "stream.background_volume": Limit(0, 1),
    "stream.slices_per_inference": Limit(1, 1_000),
    "stream.tolerance_ms": Limit(0, 60_000),
    "stream.target_false_accepts_per_hour": Limit(0, 1_000_000),
    "stream.seed": _SEED,
    "stream.average_windows_ms": Limit(1, 60_000),
}
"""The valid range of every numeric key (of each element, for a list), checked when the config
loads. Relations between keys are checked too: a clip holds at least one feature window, the
time shift is shorter than the clip, and validation plus testing leave clips for training."""

LABEL_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
"""A wanted word: 1-32 ASCII letters, digits, ``_`` or ``-``, starting with a letter or digit.

It is a folder name in the Speech Commands layout (so never ``.``, ``..``, a ``/`` or a leading
``_``, which marks ``_background_noise_`` and the ``_silence_``/``_unknown_`` classes) and a
string in the generated C++ (so nothing that needs escaping)."""


@dataclass
class Config:
    """The whole configuration of a pipeline."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    mcu: McuConfig = field(default_factory=McuConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Build a config from nested mappings; missing keys keep their defaults."""
        config = _build(cls, values, source, prefix="")
        _check_relations(config, source)
        return config

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """Load a TOML file; the error names the file for missing files and bad syntax."""
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain values (what ``results.json`` records)."""
        return dataclasses.asdict(self)

    def updated(self, values: dict[str, Any], source: str = "override") -> Config:
        """A copy with ``values`` (nested mappings) laid over this config."""
        config = _build(type(self), _deep_merge(self.to_dict(), values), source, prefix="")
        _check_relations(config, source)
        return config


def quick_overrides() -> dict[str, Any]:
    """The small smoke configuration of ``--quick``: seconds, not minutes, and the same code."""
    return {
        "data": {
            "augment_copies": 1,
            # Ten short epochs on a few dozen clips learn something only from the plain recipe:
            # the old class mix, no speed, band-limit or level augmentation, plain loss, no
            # frequency warping, no word head, no label smoothing.
            "unknown_percentage": 25.0,
            "speed_frequency": 0.0,
            "band_limit_frequency": 0.0,
            "level_db": 0.0,
            "synth": {
                "speakers": 12,
                "repeats": 2,
                "unknown_repeats": 1,
                "confusables": 4,
                "noise_files": 3,
                "noise_seconds": 5.0,
            },
        },
        "train": {
            "epochs": 10,
            "batch_size": 16,
            "lr_step_epochs": 8,
            "class_weights": "none",
            "freq_warp": 0.0,
            "word_head": 0.0,
            "label_smoothing": 0.0,
        },
        # A minute's streams are small enough to keep, to listen to with their labels.
        "stream": {"minutes": 1.0, "save_audio": True},
        "profile": {"runs": 30, "warmup": 5},
        "compress": {
            "recipes": [
                {"name": "ptq", "steps": [{"kind": "quantize", "method": "ptq", "bits": [4, 8]}]},
                {
                    "name": "qat",
                    "steps": [{"kind": "quantize", "method": "qat", "bits": [4, 8], "epochs": 1}],
                },
                {
                    "name": "magnitude",
                    "steps": [
                        {"kind": "prune", "method": "magnitude", "amount": 0.5},
                        {"kind": "finetune", "epochs": [0, 1]},
                    ],
                },
                {
                    "name": "channel",
                    "steps": [
                        {"kind": "prune", "method": "channel", "amount": 0.5},
                        {"kind": "finetune", "epochs": [0, 1]},
                    ],
                },
            ]
        },
        "export": {"variants": ["float", "ptq-8b", "qat-8b", "ptq-4b", "channel-*-ft1"]},
    }


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, values: Any, source: str, prefix: str) -> Any:
    table = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.')} must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r}; valid keys in {table}: "
            + ", ".join(fields)
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, source, prefix=key + ".")
        else:
            kwargs[name] = _check_value(hint, value, source, key)
            _check_limit(kwargs[name], source, key)
    return cls(**kwargs)


def _check_value(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list of tables, got {value!r}")
        return [_build(item_type, v, source, prefix=f"{key}[{i}].") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{source}: {key} must be a table, got {value!r}")
    if origin is list and typing.get_origin(typing.get_args(hint)[0]) is dict:
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return [dict(v) for v in value]
        raise ConfigError(f"{source}: {key} must be a list of tables, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if isinstance(value, list) and all(_is_instance(v, item_type) for v in value):
            return [item_type(v) for v in value]
        raise ConfigError(f"{source}: {key} must be a list of {item_type.__name__}, got {value!r}")
    if _is_instance(value, hint):
        return hint(value)
    raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")


def _is_instance(value: Any, expected: type) -> bool:
    if isinstance(value, bool) and expected is not bool:
        return False  # TOML's true is not the number 1
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def _check_limit(value: Any, source: str, key: str) -> None:
    limit = LIMITS.get(key)
    if limit is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if item not in limit:
            shown = f"{key} = {value!r}" if item is value else f"{key} = {value!r} holds {item!r}"
            raise ConfigError(f"{source}: {shown}, outside the valid range {limit}")


def _check_relations(config: Config, source: str) -> None:
    """Rules that tie keys together, and the wanted words."""
    data, features = config.data, config.features
    if data.clip_duration_ms < features.window_ms:
        raise ConfigError(
            f"{source}: data.clip_duration_ms = {data.clip_duration_ms} is shorter than "
            f"features.window_ms = {features.window_ms:g}; a clip must hold a feature window"
        )
    if data.time_shift_ms >= data.clip_duration_ms:
        raise ConfigError(
            f"{source}: data.time_shift_ms = {data.time_shift_ms:g} must be shorter than "
            f"data.clip_duration_ms = {data.clip_duration_ms}"
        )
    if data.speed_min > data.speed_max:
        raise ConfigError(
            f"{source}: data.speed_min = {data.speed_min:g} is above data.speed_max = "
            f"{data.speed_max:g}; the slowest speed must not exceed the fastest"
        )
    if config.train.class_weights not in ("balanced", "none"):
        raise ConfigError(
            f"{source}: train.class_weights = {config.train.class_weights!r}; valid: "
            "'balanced', 'none'"
        )
    stream = config.stream
    if stream.gap_min_ms > stream.gap_max_ms:
        raise ConfigError(
            f"{source}: stream.gap_min_ms = {stream.gap_min_ms:g} is above stream.gap_max_ms = "
            f"{stream.gap_max_ms:g}"
        )
    held_out = data.validation_percentage + data.testing_percentage
    if held_out >= 100:
        raise ConfigError(
            f"{source}: data.validation_percentage + data.testing_percentage = {held_out:g}, "
            "which leaves no clips for training; the sum must be below 100"
        )
    _check_words(data.wanted_words, source)


def _check_words(words: list[str], source: str) -> None:
    if not words:
        raise ConfigError(f"{source}: data.wanted_words is empty; name at least one word")
    for word in words:
        if not LABEL_RULE.fullmatch(word):
            raise ConfigError(
                f"{source}: data.wanted_words holds {word[:40]!r}"
                f"{f' ({len(word)} characters)' if len(word) > 32 else ''}, not a valid word: "
                "use 1-32 ASCII letters, digits, '_' or '-', starting with a letter or digit"
            )
    duplicates = sorted({word for word in words if words.count(word) > 1})
    if duplicates:
        raise ConfigError(
            f"{source}: data.wanted_words names {', '.join(map(repr, duplicates))} more than "
            "once; list each word once"
        )
