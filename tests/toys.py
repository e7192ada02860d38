"""Small, fast stand-ins for the heavy components, for tests that drive whole pipelines."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwscompress import hookimpl
from kwscompress.config import DataConfig, FeatureConfig
from kwscompress.errors import ConfigError
from kwscompress.protocols import StepResult


class ToyExtractor:
    """Log energies of ``bins`` linear bands per frame: fast, no TensorFlow."""

    name = "toy"
    description = "test-only band energies"

    def settings(self, config: FeatureConfig, sample_rate: int) -> dict[str, Any]:
        return {"window_ms": config.window_ms, "stride_ms": config.stride_ms, "bins": config.bins}

    def extract(self, audio: np.ndarray, config: FeatureConfig, sample_rate: int) -> np.ndarray:
        window = int(sample_rate * config.window_ms / 1000)
        stride = int(sample_rate * config.stride_ms / 1000)
        frames = 1 + (audio.shape[1] - window) // stride
        index = np.arange(window)[None, :] + stride * np.arange(frames)[:, None]
        spectrum = np.abs(np.fft.rfft(audio[:, index], axis=-1)) ** 2
        bands = np.array_split(spectrum, config.bins, axis=-1)
        return np.log1p(np.stack([b.sum(-1) for b in bands], axis=-1)).astype(np.float32)


class ToneSource:
    """A dataset source handing back a folder made by the ``make_dataset`` fixture."""

    name = "tones"
    description = "test-only tone dataset"

    def __init__(self, root: Path):
        self.root = root

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        return self.root


class ZeroPruner:
    """Zeroes the ``amount`` smallest weights of every layer (no masks: a toy)."""

    name = "toy_zero"
    description = "test-only pruner: zero the smallest weights"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(values) - {"amount", "fail"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}; valid keys: amount, fail")
        return {"amount": 0.5, "fail": False, **values}

    def prune(self, model: torch.nn.Module, context: Any, **settings: Any) -> StepResult:
        if settings["fail"]:
            raise RuntimeError("toy pruner asked to fail")
        model = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim > 1:
                    k = int(settings["amount"] * parameter.numel())
                    if k:
                        threshold = parameter.abs().flatten().kthvalue(k).values
                        parameter[parameter.abs() <= threshold] = 0
        return StepResult(model, {"zeroed": settings["amount"]})


class GridQuantizer:
    """Rounds weights to a symmetric grid of ``bits`` bits (a toy fake quantizer)."""

    name = "toy_grid"
    description = "test-only quantizer: weights rounded to a grid"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        bits = values.get("bits", 8)
        if not 2 <= bits <= 8:
            raise ConfigError(f"bits must be 2..8, got {bits}")
        return {"bits": bits}

    def quantize(self, model: torch.nn.Module, context: Any, **settings: Any) -> StepResult:
        model = copy.deepcopy(model)
        levels = 2 ** (settings["bits"] - 1) - 1
        with torch.no_grad():
            for parameter in model.parameters():
                scale = parameter.abs().max() / levels
                if scale > 0:
                    parameter.copy_(torch.round(parameter / scale) * scale)
        return StepResult(model, {"levels": levels})


class DataToys:
    """Registers the tone dataset (pass the ``make_dataset`` fixture's root) and the extractor."""

    def __init__(self, root: Path):
        self.root = root

    @hookimpl
    def kws_register_datasets(self) -> list[Any]:
        return [ToneSource(self.root)]

    @hookimpl
    def kws_register_feature_extractors(self) -> list[Any]:
        return [ToyExtractor()]


class ToyPlugin(DataToys):
    """Every toy: the data toys, the pruner and the quantizer."""

    @hookimpl
    def kws_register_pruners(self) -> list[Any]:
        return [ZeroPruner()]

    @hookimpl
    def kws_register_quantizers(self) -> list[Any]:
        return [GridQuantizer()]


TOY_CONFIG = {
    "data": {"source": "tones", "silence_percentage": 50, "unknown_percentage": 50},
    "features": {"name": "toy"},
    # TFLM's model: the smallest and fastest, and the numbers the tests check are its own.
    "model": {"name": "tiny_conv"},
    "train": {"epochs": 3, "batch_size": 8},
    "profile": {"runs": 10, "warmup": 1},
    "sweep": {"workers": 1},
}
"""A config that runs the whole pipeline on the toys in seconds."""
