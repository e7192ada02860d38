"""User mistakes on the command line: one clear message, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwscompress.cli import main


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kwscompress: error: ")
    assert "Traceback" not in err
    assert err.count("\n") == 1
    return err


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kws.toml"
    path.write_text(text)
    return str(path)


def test_missing_config_file(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "run", str(tmp_path / "missing.toml"))
    assert "missing.toml' does not exist" in err


def test_unknown_config_key(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "run", _config(tmp_path, "[model]\nnmae = 'x'\n"))
    assert "unknown key 'model.nmae'; valid keys in [model]: name" in err


def test_unknown_component_name(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "run", _config(tmp_path, "[model]\nname = 'resnet'\n"))
    assert "unknown model 'resnet'; valid names: ds_cnn, tc_ds_cnn, tiny_conv" in err


def test_missing_dataset_directory(capsys, tmp_path: Path) -> None:
    text = f"[data]\nsource = 'speech_commands'\nroot = '{tmp_path / 'nowhere'}'\n"
    err = _fails(capsys, "run", _config(tmp_path, text), "--out", str(tmp_path / "runs"))
    assert f"dataset directory '{tmp_path / 'nowhere'}' does not exist" in err


def test_wanted_word_without_folder(capsys, tmp_path: Path, make_dataset) -> None:
    root = make_dataset()
    text = f"[data]\nsource = 'speech_commands'\nroot = '{root}'\nwanted_words = ['up']\n"
    err = _fails(capsys, "run", _config(tmp_path, text), "--out", str(tmp_path / "runs"))
    assert "wanted word 'up' has no folder" in err
    assert "words available: cat, dog, no, yes" in err


def test_empty_root_for_speech_commands(capsys, tmp_path: Path) -> None:
    err = _fails(
        capsys,
        "run",
        _config(tmp_path, "[data]\nsource = 'speech_commands'\n"),
        "--out",
        str(tmp_path / "runs"),
    )
    assert "data.root is empty" in err


def test_synth_refuses_an_existing_folder(capsys, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    err = _fails(capsys, "synth", "--out", str(tmp_path))
    assert f"{tmp_path} exists already; choose a new one" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_unknown_board_fails_before_any_work(capsys, tmp_path: Path) -> None:
    text = "[estimate]\nboard = 'uno'\n"
    err = _fails(capsys, "run", _config(tmp_path, text), "--out", str(tmp_path / "runs"))
    assert "unknown board 'uno'; valid names:" in err and "nano33ble" in err
    assert not (tmp_path / "runs").exists()
