"""What each kind of component must offer.

Registration hooks (:mod:`kwscompress.hookspecs`) return objects that satisfy these Protocols.
They are structural: a plugin needs no base class, only the attributes and methods below.
Every component has a ``name`` (what users write in the config) and a one-line ``description``
(what ``kwscompress plugins`` prints).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@runtime_checkable
class Quantizer(Component, Protocol):
    """Turns a float model into a quantized variant."""

    def quantize(self, model: torch.nn.Module, bits: int, **options: Any) -> torch.nn.Module:
        """Return a quantized copy of ``model`` at ``bits`` bits."""
        ...


@runtime_checkable
class Pruner(Component, Protocol):
    """Removes weights or channels from a model."""

    def prune(self, model: torch.nn.Module, amount: float, **options: Any) -> torch.nn.Module:
        """Return a copy of ``model`` with ``amount`` (0..1) of its weights or channels gone."""
        ...


@runtime_checkable
class Backend(Component, Protocol):
    """Exports a model to a deployable artifact."""

    def export(self, model: torch.nn.Module, out_dir: Path, **options: Any) -> dict[str, Path]:
        """Write the artifacts into ``out_dir`` and return them by kind."""
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
