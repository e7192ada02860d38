"""Issue 9, runs: reruns start afresh, damaged results and paths that are files give one clear
message, files respect the umask, concurrent cache fills, --version and the environment record."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from toys import ToyExtractor

from kwscompress import Pipeline, __version__, hookimpl
from kwscompress.cli import main
from kwscompress.config import Config, DataConfig, FeatureConfig
from kwscompress.data.dataset import index_dataset
from kwscompress.errors import KwsError
from kwscompress.run import Run, atomic_dir, write_json
from kwscompress.stages.features import compute_features

TESTS = Path(__file__).parent
LATER_STAGES_OFF = {k: {"enabled": False} for k in ("compress", "export", "deploy")}
"""Keeps these tests independent of the compression sweep's plugins."""


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1", **env},
        check=False,
    )


class BrokenSource:
    """A dataset source that fails at once: run() stops right after starting its results."""

    name = "broken_source"
    description = "test-only source that fails"

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        raise KwsError("no data today")


def test_rerun_starts_results_afresh(pm, tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def kws_register_datasets(self) -> list[Any]:
            return [BrokenSource()]

    pm.register(Plugin(), name="broken-source")
    run_dir = tmp_path / "run"
    stale = {
        "schema": 1,
        "started": "2020-01-01T00:00:00+00:00",
        "train": {"seconds": 1.0},
        "evaluate": {"accuracy": {"testing": 0.9}},
        "plugin_errors": [{"plugin": "old", "hook": "kws_stage_started", "error": "x"}],
        "finished": "2020-01-01T00:01:00+00:00",
    }
    write_json(run_dir / "results.json", stale)
    (run_dir / "report.html").write_text("old report")
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "old.png").write_bytes(b"png")
    config = Config.from_dict({"data": {"source": "broken_source"}, **LATER_STAGES_OFF})
    with pytest.raises(KwsError, match="no data today"):
        Pipeline(config, plugin_manager=pm, run_dir=run_dir).run()
    results = json.loads((run_dir / "results.json").read_text())
    assert not {"train", "evaluate", "finished"} & set(results)
    assert results["started"] != stale["started"] and results["plugin_errors"] == []
    assert results["failed"] == {"stage": "data", "message": "no data today"}
    assert json.loads((run_dir / "results.previous.json").read_text()) == stale
    assert not (run_dir / "report.html").exists() and not (run_dir / "plots").exists()
    # The environment record that makes two runs comparable.
    environment = results["environment"]
    assert environment["torch"] and environment["cpu"] and environment["cpu_capability"]
    assert "onednn" in environment and environment["python"] == sys.version.split()[0]


def test_run_over_damaged_results_starts_afresh(pm, tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def kws_register_datasets(self) -> list[Any]:
            return [BrokenSource()]

    pm.register(Plugin(), name="broken-source")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("[1, 2")
    config = Config.from_dict({"data": {"source": "broken_source"}, **LATER_STAGES_OFF})
    with pytest.raises(KwsError, match="no data today"):
        Pipeline(config, plugin_manager=pm, run_dir=run_dir).run()
    assert json.loads((run_dir / "results.json").read_text())["failed"]["stage"] == "data"
    assert (run_dir / "results.previous.json").read_text() == "[1, 2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": 1, "train": ', "is not valid JSON"),
        ("[1, 2, 3]", "holds a JSON list, not an object"),
    ],
)
def test_damaged_results_give_one_clear_message(
    tmp_path: Path, capsys, content: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(content)
    with pytest.raises(KwsError, match=message):
        Run(run_dir)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(run_dir / "results.json") in err


def test_damaged_results_through_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{not json")
    result = _cli("report", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"kwscompress: error: '{tmp_path / 'results.json'}' is not")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_paths_that_are_files_give_one_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "kws.toml"
    config.write_text("[data]\nwanted_words = ['yes']\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    out = _cli("run", str(config), "--out", str(blocker))
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"kwscompress: error: run directory (run.out_dir / run.name, or --out) "
        f"'{blocker / 'kws'}' cannot be used: '{blocker}' is a file, not a folder; "
        "choose another path"
    )
    assert "Traceback" not in out.stderr
    cache = _cli(
        "run", str(config), "--out", str(tmp_path / "runs"), KWSCOMPRESS_CACHE=str(blocker)
    )
    assert cache.returncode == 2 and "Traceback" not in cache.stderr
    assert cache.stderr.splitlines()[-1].startswith(
        f"kwscompress: error: cache directory (run.cache_dir or KWSCOMPRESS_CACHE) '{blocker}' "
        "cannot be used"
    )
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def umask() -> Iterator[Any]:
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_files_renamed_into_place_respect_the_umask(
    umask, make_dataset, tmp_path: Path, mask: int, file_mode: int, dir_mode: int
) -> None:
    umask(mask)
    run = Run(tmp_path / "run")
    run.record("x", 1)
    assert _mode(run.results_path) == file_mode
    with atomic_dir(tmp_path / "cache" / "entry") as tmp:
        (tmp / "data.bin").write_bytes(b"1")
    assert _mode(tmp_path / "cache" / "entry") == dir_mode
    data = DataConfig(augment_copies=1)
    index = index_dataset(make_dataset(), data)
    compute_features(index, data, FeatureConfig(), ToyExtractor(), "1", tmp_path / "cache")
    (folder,) = (tmp_path / "cache" / "features").glob("[!.]*")
    assert _mode(folder) == dir_mode
    assert {_mode(f) for f in folder.iterdir()} == {file_mode}


CONCURRENT_FILL = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from toys import ToyExtractor
from kwscompress.config import Config, FeatureConfig
from kwscompress.data.dataset import index_dataset
from kwscompress.data.sources import SyntheticSource
from kwscompress.stages.features import compute_features
config = Config.from_dict({{"data": {{"wanted_words": ["yes"], "augment_copies": 1, "synth": {{
    "speakers": 4, "repeats": 1, "unknown_repeats": 0, "noise_files": 1, "noise_seconds": 1.0}}}}}})
cache = Path({cache!r})
root = SyntheticSource().prepare(config.data, cache)
index = index_dataset(root, config.data)
sets, hit = compute_features(index, config.data, FeatureConfig(), ToyExtractor(), "1", cache)
print(root, sets.meta["cache_key"])
"""


def test_two_runs_fill_an_empty_shared_cache_together(tmp_path: Path) -> None:
    script = CONCURRENT_FILL.format(tests=str(TESTS), cache=str(tmp_path / "cache"))
    env = {**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        # The one that waited says so; nothing else reaches stderr.
        assert all(
            line.startswith("kwscompress: waiting for another process ")
            for line in err.splitlines()
        ), err
    assert outputs[0][0] == outputs[1][0]  # same dataset folder, same feature key
    assert len(list((tmp_path / "cache" / "synth").glob("[!.]*"))) == 1
    leftovers = [p.name for p in (tmp_path / "cache").rglob(".*tmp*")]
    assert leftovers == []


def test_version_flag() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"kwscompress {__version__}\n"


class InterruptedSource(BrokenSource):
    name = "interrupted_source"

    def prepare(self, config: DataConfig, cache_dir: Path) -> Path:
        raise KeyboardInterrupt


def test_interrupted_stage_is_recorded(pm, tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def kws_register_datasets(self) -> list[Any]:
            return [InterruptedSource()]

    pm.register(Plugin(), name="interrupted-source")
    config = Config.from_dict({"data": {"source": "interrupted_source"}, **LATER_STAGES_OFF})
    with pytest.raises(KeyboardInterrupt):
        Pipeline(config, plugin_manager=pm, run_dir=tmp_path / "run").run()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["failed"] == {"stage": "data", "message": "interrupted"}
    assert "finished" not in results
