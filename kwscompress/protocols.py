"""What each kind of component must offer.

Registration hooks (:mod:`kwscompress.hookspecs`) return objects that satisfy these Protocols.
They are structural: a plugin needs no base class, only the attributes and methods below.
Every component has a ``name`` (what users write in the config) and a one-line ``description``
(what ``kwscompress plugins`` prints).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from kwscompress.config import DataConfig, FeatureConfig
    from kwscompress.run import Run


@runtime_checkable
class Component(Protocol):
    """What every component has."""

    name: str
    description: str


@runtime_checkable
class DatasetSource(Component, Protocol):
    """Turns the ``[data]`` config into a directory in the Speech Commands layout."""

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        """Return the dataset root, creating (and caching) it under ``cache_dir`` if needed."""
        ...


@runtime_checkable
class FeatureExtractor(Component, Protocol):
    """Audio clips in, 2-D features out."""

    def settings(self, config: FeatureConfig, sample_rate: int) -> dict[str, Any]:
        """Every setting that changes the output, JSON-ready (part of the feature cache key)."""
        ...

    def extract(self, audio: np.ndarray, config: FeatureConfig, sample_rate: int) -> np.ndarray:
        """Map float32 clips ``[N, samples]`` in [-1, 1] to features ``[N, frames, bins]``."""
        ...


@runtime_checkable
class ModelSpec(Component, Protocol):
    """A model architecture."""

    def build(self, input_shape: tuple[int, int], num_classes: int) -> torch.nn.Module:
        """Return a fresh model taking ``[N, frames, bins]`` features and returning logits."""
        ...


@runtime_checkable
class Estimator(Component, Protocol):
    """Static cost analysis of a model."""

    def estimate(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """Return per-layer and total costs of one batch-1 forward pass, JSON-ready."""
        ...


@dataclass
class StepResult:
    """What a compression step hands back: the new model and facts about what it did.

    ``info`` is JSON-ready and lands in the variant's row under ``steps[i].info`` (for example
    the channels a pruner kept, the sparsity it reached, or the bit widths a quantizer used).
    """

    model: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CompressionContext(Protocol):
    """What a compression step may use besides the model: data, a training loop, the seed.

    The core builds one per variant (:class:`kwscompress.compress.context.StepContext`); a step
    must not keep it after it returns.
    """

    input_shape: tuple[int, int]
    """``(frames, bins)`` of one clip's features."""
    labels: list[str]
    """Class names in output order."""
    seed: int
    """Seed for every random choice the step makes."""

    def training_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        """``count`` batches of training features ``[batch, frames, bins]`` (calibration)."""
        ...

    def finetune(
        self, model: torch.nn.Module, epochs: int, learning_rate: float | None = None
    ) -> dict[str, Any]:
        """Train ``model`` in place for ``epochs`` on the training set, keep the best validation
        epoch, and return a JSON-ready summary (``best_validation_accuracy``, ``epochs``, ...).

        ``learning_rate`` defaults to ``[compress] finetune_learning_rate``.
        """
        ...


@runtime_checkable
class Quantizer(Component, Protocol):
    """Turns a float model into a quantized variant (fake-quantized, integer values reachable).

    ``settings`` are the step's keys from the recipe other than ``kind`` and ``method``, with
    their defaults filled in by :meth:`settings`.
    """

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check the recipe's keys and return them with every default filled in.

        :raises ~kwscompress.errors.ConfigError: an unknown key or a value out of range,
            naming the key and what is valid.
        """
        ...

    def quantize(
        self, model: torch.nn.Module, context: CompressionContext, **settings: Any
    ) -> StepResult:
        """Return a quantized copy of ``model``; ``model`` itself is left unchanged."""
        ...


@runtime_checkable
class Pruner(Component, Protocol):
    """Removes weights (unstructured) or whole channels (structured) from a model."""

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check the recipe's keys (``amount`` at least) and return them with defaults filled in.

        :raises ~kwscompress.errors.ConfigError: naming the key and what is valid.
        """
        ...

    def prune(
        self, model: torch.nn.Module, context: CompressionContext, **settings: Any
    ) -> StepResult:
        """Return a pruned copy of ``model``; ``model`` itself is left unchanged."""
        ...


@dataclass
class ExportInputs:
    """Everything an exporter needs to turn one variant into deployable files."""

    variant_id: str
    """The variant's ``id`` in ``results.json`` (``float`` for the trained model)."""
    model: torch.nn.Module
    """The variant's model: float, pruned, or fake-quantized (Brevitas)."""
    weight_bits: int
    """32 for a float model, else the quantizer's weight bits."""
    labels: list[str]
    """Class names in output order."""
    input_shape: tuple[int, int]
    """``(frames, bins)`` of one clip's features."""
    representative: np.ndarray
    """Training features ``[N, frames, bins]`` (float32) for calibration."""
    test_features: np.ndarray
    """Test features ``[N, frames, bins]`` (float32) for verification."""
    test_labels: np.ndarray
    """Test class indices ``[N]``."""


@runtime_checkable
class Exporter(Component, Protocol):
    """Writes a variant as a deployable file (ONNX, TFLite) and checks it against the model."""

    def applies_to(self, inputs: ExportInputs) -> bool:
        """Whether this exporter can export that variant (e.g. TFLite needs <= 8-bit or float)."""
        ...

    def export(self, inputs: ExportInputs, out_dir: Path) -> dict[str, Any]:
        """Write the files into ``out_dir``; return a JSON-ready record for the variant's row.

        The record has ``files`` (``{kind: path relative to out_dir}``) and whatever the
        exporter measured (sizes, agreement with the model, interpreter checks).
        """
        ...


@dataclass
class FirmwareInputs:
    """What a firmware backend renders a project from."""

    variant_id: str
    tflite_path: Path
    """The verified full-int8 ``.tflite`` file: the exact bytes to flash."""
    labels: list[str]
    features: dict[str, Any]
    """The feature extractor's settings as used in training (``name``, window, stride, bins,
    ``sample_rate``, scale)."""
    arena_bytes: int | None
    """The smallest tensor arena that worked in TFLM (measured), or None if not measured."""
    recognizer: dict[str, Any]
    """Command recognizer settings: ``average_window_ms``, ``detection_threshold``,
    ``suppression_ms``, ``minimum_count``."""
    recognizer_source: str = "[recognizer] config"
    """Where the recognizer settings come from (tuned on which stream, or the config)."""


@runtime_checkable
class Backend(Component, Protocol):
    """Renders firmware (a sketch or project) around an exported model."""

    def render(self, inputs: FirmwareInputs, out_dir: Path, **options: Any) -> dict[str, Path]:
        """Write the project into ``out_dir`` and return its files by kind."""
        ...


@runtime_checkable
class McuRuntime(Component, Protocol):
    """Measures an int8 model as it would run on the microcontroller, without the board.

    Built in: ``native`` (generated C kernels cross-compiled for Cortex-M4, sizes read from the
    ELF, latency from an emulated core).
    """

    def measure(
        self,
        tflite_path: Path,
        int8_inputs: np.ndarray,
        out_dir: Path,
        weight_bits: int = 8,
        clock_hz: int = 64_000_000,
        emulate_clips: int = 3,
    ) -> dict[str, Any]:
        """Build and run the model; return the variant's ``mcu`` record (JSON-ready).

        :param int8_inputs: model inputs already quantized with the model's input scale and
            zero point, ``[N, ...]``; outputs are checked against TFLM on all of them.
        :param emulate_clips: how many of them run in the emulated core.
        """
        ...


@runtime_checkable
class Executor(Component, Protocol):
    """Runs a list of independent jobs (compression variants) and reports each as it ends.

    ``task(shared, job)`` is a picklable module-level function; ``shared`` is the payload every
    job needs (baseline weights, features) and should travel once, not once per job. The
    executor calls ``on_done(index, outcome)`` in the calling process as each job finishes, where
    ``outcome`` is the task's return value, or the exception that ended it when the job could
    not run to the end (a worker that died, a lost node).
    """

    def run(
        self,
        task: Callable[[Any, Any], Any],
        shared: Any,
        jobs: Sequence[Any],
        options: dict[str, Any],
        on_done: Callable[[int, Any], None],
    ) -> None:
        """Run every job; ``options`` are the ``[sweep]`` config keys for this executor."""
        ...


@dataclass(frozen=True)
class SectionContent:
    """One rendered report section: an HTML fragment and the same content as Markdown."""

    html: str
    markdown: str


@runtime_checkable
class ReportSection(Component, Protocol):
    """One section of ``report.html``; sections are ordered by ``order``, lowest first."""

    title: str
    order: int

    def render(self, run: Run) -> SectionContent | None:
        """Render from the run's results and files, or return None when there is nothing to show."""
        ...
