"""Config defaults, TOML loading and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwscompress.config import Config, quick_overrides
from kwscompress.errors import ConfigError


def test_defaults_match_the_device_and_the_reference_workflow() -> None:
    config = Config()
    assert config.data.wanted_words == ["yes", "no"]
    assert (config.features.window_ms, config.features.stride_ms, config.features.bins) == (
        30.0,
        20.0,
        40,
    )
    assert config.features.name == "micro"
    assert config.model.name == "tc_ds_cnn"
    assert (config.data.time_shift_ms, config.data.background_frequency) == (100.0, 0.8)


def test_from_toml_overrides_only_given_keys(tmp_path: Path) -> None:
    path = tmp_path / "kws.toml"
    path.write_text('[data]\nwanted_words = ["up", "down"]\n[train]\nepochs = 3\n')
    config = Config.from_toml(path)
    assert config.data.wanted_words == ["up", "down"]
    assert config.train.epochs == 3
    assert config.train.batch_size == Config().train.batch_size


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    config = Config.from_dict({"train": {"learning_rate": 1}})
    assert config.train.learning_rate == 1.0
    assert isinstance(config.train.learning_rate, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[data]\nwanted_wrds = []\n", "unknown key 'data.wanted_wrds'; valid keys in [data]"),
        ("[trainer]\n", "unknown key 'trainer'; valid keys in the top level: run, data"),
        ("[data.synth]\nspeakerz = 3\n", "unknown key 'data.synth.speakerz'"),
        ("[train]\nepochs = 'ten'\n", "train.epochs must be int, got 'ten'"),
        ("[train]\nepochs = true\n", "train.epochs must be int, got True"),
        ("[data]\nwanted_words = [1]\n", "data.wanted_words must be a list of str"),
        ("data = 3\n", "data must be a table"),
        ("[data\n", "is not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_toml(tmp_path / "nope.toml")


def test_updated_merges_nested_tables() -> None:
    config = Config().updated(quick_overrides())
    assert config.train.epochs == 10
    assert config.data.synth.speakers == 12
    assert config.data.synth.seed == Config().data.synth.seed
    assert config.to_dict()["data"]["synth"]["speakers"] == 12
