"""Issue 9, config: every numeric key has a range checked at load, duplicate and invalid words
are refused up front, and the command line says so in one line with status 2."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from kwscompress.cli import main
from kwscompress.config import LIMITS, Config, quick_overrides
from kwscompress.errors import ConfigError


def _numeric_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{item.name}.")
        elif hint in (int, float) or typing.get_args(hint) in ((int,), (float,)):
            keys.append(prefix + item.name)
    return keys


def test_every_numeric_key_of_every_table_has_a_range() -> None:
    keys = _numeric_keys()
    assert {"data.clip_duration_ms", "estimate.bits", "profile.runs", "sweep.workers"} <= set(keys)
    assert sorted(set(keys) - set(LIMITS)) == []
    assert sorted(set(LIMITS) - set(keys)) == []  # no range for a key that is gone


def test_defaults_and_quick_settings_are_in_range() -> None:
    defaults = Config()
    for key, limit in LIMITS.items():
        value = defaults
        for part in key.split("."):
            value = getattr(value, part)
        for item in value if isinstance(value, list) else [value]:
            assert item in limit, (key, item, limit)
    Config().updated(quick_overrides())


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[data]\nclip_duration_ms = 10\n", "data.clip_duration_ms = 10 is shorter than"),
        ("[data]\ntime_shift_ms = 5000\n", "data.time_shift_ms = 5000 must be shorter than"),
        ("[data]\naugment_copies = 0\n", "data.augment_copies = 0, outside the valid range [1,"),
        ("[data]\nbackground_volume = -5\n", "data.background_volume = -5.0, outside the valid"),
        ("[data]\nsilence_percentage = -10\n", "data.silence_percentage = -10.0, outside the"),
        ("[data]\nvalidation_percentage = 60\ntesting_percentage = 40\n", "leaves no clips"),
        ("[estimate]\nbits = [8, 0]\n", "estimate.bits = [8, 0] holds 0, outside the valid range"),
        ("[profile]\nruns = 0\n", "profile.runs = 0, outside the valid range [1, 1000000]"),
        ("[profile]\nthreads = 0\n", "profile.threads = 0, outside the valid range"),
        ("[train]\nlearning_rate = nan\n", "train.learning_rate = nan, outside the valid range"),
        ("[train]\nlearning_rate = 0\n", "train.learning_rate = 0.0, outside the valid range (0,"),
        ("[train]\nseed = -1\n", "train.seed = -1, outside the valid range [0, 4294967295]"),
        ("[sweep]\nworkers = -1\n", "sweep.workers = -1, outside the valid range"),
        ("[recognizer]\ndetection_threshold = 300\n", "valid range [0, 255]"),
        ('[data]\nwanted_words = ["yes", "yes"]\n', "names 'yes' more than once"),
        ("[data]\nwanted_words = []\n", "data.wanted_words is empty"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "kws.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "word", [".", "..", "a\u0000b", "x" * 300, "_unknown_", "up/down", "", "yes no", 'say"hi']
)
def test_invalid_words_are_refused_with_the_rule(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"data": {"wanted_words": ["yes", word]}})
    assert "not a valid word: use 1-32 ASCII letters, digits, '_' or '-', starting with" in str(
        info.value
    )


def test_valid_words_pass() -> None:
    words = ["yes", "no", "up-down", "k2", "x" * 32, "Marvin"]
    assert Config.from_dict({"data": {"wanted_words": words}}).data.wanted_words == words


def test_range_errors_exit_2_in_one_line_in_process(capsys, tmp_path: Path) -> None:
    path = tmp_path / "kws.toml"
    path.write_text("[data]\nclip_duration_ms = 10\n")
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kwscompress: error: ")
    assert not (tmp_path / "runs").exists()


def test_range_error_through_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "kws.toml"
    path.write_text('[profile]\nwarmup = -1\n[data]\nwanted_words = ["yes"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", "run", str(path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"kwscompress: error: {path}: profile.warmup = -1, outside the valid range [0, 1000000]\n"
    )
