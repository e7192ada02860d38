"""Shared fixtures: isolated cache, quiet progress, small generated datasets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from support import SAMPLE_RATE, WORD_TONES, speakers_for, tone

from kwscompress.plugins import PluginManager, get_plugin_manager


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    monkeypatch.setenv("KWSCOMPRESS_NO_PROGRESS", "1")
    monkeypatch.setenv("KWSCOMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("KWSCOMPRESS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("KWSCOMPRESS_TRACE_PLUGINS", raising=False)


@pytest.fixture
def pm() -> Iterator[PluginManager]:
    """A plugin manager with the installed plugins; ad-hoc plugins registered on it vanish after."""
    manager = get_plugin_manager()
    before = set(manager.get_plugins())
    yield manager
    for plugin in set(manager.get_plugins()) - before:
        manager.unregister(plugin)


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Write a small Speech Commands-layout dataset and return its root.

    Each word is a tone at its own frequency; each split gets ``per_split`` speakers per word.
    """

    def make(words: dict[str, float] | None = None, per_split: int = 2, name: str = "ds") -> Path:
        root = tmp_path / name
        words = words or WORD_TONES
        for split_index, split in enumerate(("training", "validation", "testing")):
            for speaker in speakers_for(split, per_split):
                for word, freq in words.items():
                    folder = root / word
                    folder.mkdir(parents=True, exist_ok=True)
                    seed = int(speaker, 16) + split_index
                    soundfile.write(
                        folder / f"{speaker}_nohash_0.wav",
                        tone(freq, seed=seed),
                        SAMPLE_RATE,
                        subtype="PCM_16",
                    )
        noise_dir = root / "_background_noise_"
        noise_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        soundfile.write(
            noise_dir / "white.wav",
            (0.1 * rng.standard_normal(SAMPLE_RATE * 3)).astype(np.float32),
            SAMPLE_RATE,
            subtype="PCM_16",
        )
        return root

    return make
