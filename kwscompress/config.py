"""Typed configuration: defaults, TOML loading and validation that names the key at fault.

The config has one table per stage. Every key is documented in :doc:`/configuration`; the
defaults are the values below. A key that does not exist, or a value of the wrong type, raises
:class:`~kwscompress.errors.ConfigError` naming the file and the key and listing what is valid.
"""

from __future__ import annotations

import dataclasses
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
    unknown_percentage: float = 25.0
    """``_unknown_`` clips per split, as a percentage of the wanted-word clips."""
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
    augment_copies: int = 8
    """Augmented versions of each training clip whose features are computed (and cached)."""
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


@dataclass
class ModelConfig:
    """``[model]``: the architecture."""

    name: str = "tiny_conv"
    """Model: ``tiny_conv`` or ``ds_cnn``."""


@dataclass
class TrainConfig:
    """``[train]``: optimisation."""

    epochs: int = 200
    """Passes over the training set (200 x 30 batches is about 6,000 steps; TFLM's own recipe
    takes 18,000, and fewer left tiny_conv under-trained on the synthetic set)."""
    batch_size: int = 100
    """Clips per step."""
    learning_rate: float = 0.001
    """Adam's initial learning rate."""
    lr_step_epochs: int = 150
    """The learning rate is multiplied by ``lr_gamma`` every this many epochs."""
    lr_gamma: float = 0.1
    """Learning-rate decay factor."""
    weight_decay: float = 0.0001
    """Adam's L2 penalty."""
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

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Build a config from nested mappings; missing keys keep their defaults."""
        return _build(cls, values, source, prefix="")

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
        return _build(type(self), _deep_merge(self.to_dict(), values), source, prefix="")


def quick_overrides() -> dict[str, Any]:
    """The small smoke configuration of ``--quick``: seconds, not minutes, and the same code."""
    return {
        "data": {
            "augment_copies": 1,
            "synth": {
                "speakers": 12,
                "repeats": 2,
                "unknown_repeats": 1,
                "noise_files": 3,
                "noise_seconds": 5.0,
            },
        },
        "train": {"epochs": 10, "batch_size": 16, "lr_step_epochs": 8},
        "profile": {"runs": 30, "warmup": 5},
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
    return cls(**kwargs)


def _check_value(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
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
