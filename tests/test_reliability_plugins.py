"""Issue 9, plugins: a failing component names its plugin, a broken plugin leaves the others
usable and is listed, observer errors reach the user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from toys import ToneSource, ToyExtractor

from kwscompress import Pipeline, hookimpl
from kwscompress.cli import _print_summary, main
from kwscompress.config import Config
from kwscompress.errors import PluginError
from kwscompress.report import write_report
from kwscompress.run import Run


class Failing:
    """Components that raise in their working method: dataset, features, model, estimator."""

    description = "test-only component that raises"

    def __init__(self, name: str):
        self.name = name

    def _fail(self) -> Any:
        raise RuntimeError(f"{self.name} exploded")

    def prepare(self, *args: Any) -> Any:
        return self._fail()

    def extract(self, *args: Any) -> Any:
        return self._fail()

    def build(self, *args: Any) -> Any:
        return self._fail()

    def estimate(self, *args: Any) -> Any:
        return self._fail()

    def settings(self, config: Any, sample_rate: int) -> dict[str, Any]:
        return {}


class FailingPlugin:
    def __init__(self, root: Path):
        self.root = root

    @hookimpl
    def kws_register_datasets(self) -> list[Any]:
        return [ToneSource(self.root), Failing("bad_source")]

    @hookimpl
    def kws_register_feature_extractors(self) -> list[Any]:
        return [ToyExtractor(), Failing("bad_features")]

    @hookimpl
    def kws_register_models(self) -> list[Any]:
        return [Failing("bad_model")]

    @hookimpl
    def kws_register_estimators(self) -> list[Any]:
        return [Failing("bad_estimator")]


@pytest.mark.parametrize(
    ("table", "name", "stage", "component", "method"),
    [
        ("data.source", "bad_source", "data", "dataset 'bad_source'", "prepare"),
        (
            "features.name",
            "bad_features",
            "features",
            "feature extractor 'bad_features'",
            "extract",
        ),
        ("model.name", "bad_model", "train", "model 'bad_model'", "build"),
        (
            "estimate.estimator",
            "bad_estimator",
            "estimate",
            "estimator 'bad_estimator'",
            "estimate",
        ),
    ],
)
def test_failing_component_is_named_and_finished_stages_stay(
    pm, make_dataset, tmp_path: Path, table: str, name: str, stage: str, component: str, method: str
) -> None:
    pm.register(FailingPlugin(make_dataset()), name="failing")
    values: dict[str, Any] = {
        "data": {"source": "tones", "augment_copies": 1},
        "features": {"name": "toy"},
        "train": {"epochs": 1, "batch_size": 8},
        **{k: {"enabled": False} for k in ("compress", "export", "deploy")},
    }
    section, key = table.split(".")
    values.setdefault(section, {})[key] = name
    pipe = Pipeline(Config.from_dict(values), plugin_manager=pm, run_dir=tmp_path / "run")
    call = {"data": pipe.load_data, "features": pipe.features, "train": pipe.train}
    with pytest.raises(PluginError) as info:
        call.get(stage, pipe.estimate)()
    error = info.value
    assert str(error) == (
        f"{component} of plugin 'failing' failed in {method}(): RuntimeError: {name} exploded"
    )
    assert (error.plugin, error.component) == ("failing", component)
    assert isinstance(error.__cause__, RuntimeError)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["failed"] == {
        "stage": stage,
        "message": str(error),
        "plugin": "failing",
        "component": component,
    }
    finished = {"data": [], "features": ["data"], "train": ["data", "features"], "estimate": []}
    for earlier in finished[stage]:
        assert "seconds" in results[earlier]
    log = (tmp_path / "run" / "logs" / "run.log").read_text()
    assert f"stage {stage} failed" in log and "Traceback" in log and f"{name} exploded" in log


def test_registered_call_wraps_errors_and_passes_user_errors(pm) -> None:
    pm.register(FailingPlugin(Path(".")), name="failing")
    with pytest.raises(PluginError, match="estimator 'bad_estimator' of plugin 'failing'"):
        pm.registered("estimator", "bad_estimator").call("estimate", None, (1,))
    spec = pm.registered("model", "tiny_conv")
    assert spec.call("build", (49, 40), 4) is not None
    assert pm.blame(ValueError("no traceback")) is None


def _third_party(tmp_path: Path, **modules: str) -> Path:
    """A distribution ``kws-broken`` with one entry point per module (name -> source)."""
    dist = tmp_path / "kws_broken-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kws-broken\nVersion: 0.3\n")
    points = "".join(f"{name} = kws_{name}_plugin\n" for name in modules)
    (dist / "entry_points.txt").write_text(f"[kwscompress]\n{points}")
    for name, source in modules.items():
        (tmp_path / f"kws_{name}_plugin.py").write_text(source)
    return tmp_path


def _cli(*args: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"PYTHONPATH": str(path)} if path else {}
    return subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1", **extra, **env},
        check=False,
    )


BROKEN = {
    "raising": (
        "from kwscompress import hookimpl\n"
        "@hookimpl\ndef kws_register_models():\n    raise RuntimeError('hook bug')\n"
    ),
    "nameless": (
        "from kwscompress import hookimpl\n"
        "class P:\n    description = 'no name'\n"
        "@hookimpl\ndef kws_register_pruners():\n    return [P()]\n"
    ),
    "unimportable": "import kws_no_such_module\n",
}


def test_broken_plugins_are_named_listed_and_leave_the_rest_usable(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    path = _third_party(tmp_path, **BROKEN)
    result = _cli("plugins", "--json", path=path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert any(r["name"] == "tiny_conv" and r["status"] == "ok" for r in rows)
    broken = {r["plugin"]: r for r in rows if r["status"] == "broken"}
    assert sorted(broken) == ["nameless", "raising", "unimportable"]
    assert {r["version"] for r in broken.values()} == {"0.3"}
    assert "kws_register_models failed: hook bug" in broken["raising"]["description"]
    assert (
        "kws_register_pruners failed: it returned a component without a name"
        in (broken["nameless"]["description"])
    )
    warnings = sorted(result.stderr.splitlines())
    assert len(warnings) == 3
    for plugin, warning in zip(sorted(broken), warnings, strict=True):
        assert warning.startswith(f"kwscompress: warning: plugin {plugin!r} is broken: ")
    assert "failed to load (kws_unimportable_plugin): ModuleNotFoundError" in warnings[2]
    assert "to skip it, set KWSCOMPRESS_LOAD_PLUGINS" in warnings[2]
    # The table, and the variable that skips them (in this process: faster than another).
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plugins"]) == 0
    assert capsys.readouterr().out.count("BROKEN") == 3
    monkeypatch.setenv("KWSCOMPRESS_LOAD_PLUGINS", "")
    assert main(["plugins", "--json"]) == 0
    assert capsys.readouterr().err == ""


FAILING_EXTRACTOR = """from pathlib import Path
from kwscompress import hookimpl
class Source:
    name = 'fixed'
    description = 'a fixed folder'
    def prepare(self, config, cache_dir):
        return Path({root!r})
class Bad:
    name = 'bad'
    description = 'raises'
    def settings(self, config, rate):
        return {{}}
    def extract(self, audio, config, rate):
        raise ValueError('bad shape')
@hookimpl
def kws_register_datasets():
    return [Source()]
@hookimpl
def kws_register_feature_extractors():
    return [Bad()]
"""
ONLY_TRAINING = (
    "[data]\nsource = 'fixed'\naugment_copies = 1\n[features]\nname = 'bad'\n"
    "[compress]\nenabled = false\n[export]\nenabled = false\n[deploy]\nenabled = false\n"
)


def test_failing_component_through_the_command_line(
    tmp_path: Path, make_dataset, monkeypatch, capsys
) -> None:
    path = _third_party(tmp_path, failing=FAILING_EXTRACTOR.format(root=str(make_dataset())))
    config = tmp_path / "kws.toml"
    config.write_text(ONLY_TRAINING)
    out = tmp_path / "runs"
    result = _cli("run", str(config), "--out", str(out), path=path)
    assert result.returncode == 2
    log = out / "kws" / "logs" / "run.log"
    assert result.stderr == (
        "kwscompress: error: feature extractor 'bad' of plugin 'failing' failed in extract(): "
        f"ValueError: bad shape (the traceback is in {log}, or shown with --traceback)\n"
    )
    results = json.loads((out / "kws" / "results.json").read_text())
    assert "seconds" in results["data"] and results["failed"]["stage"] == "features"
    assert "Traceback" in log.read_text()
    # The traceback on request: a flag before or after the subcommand, or the variable.
    monkeypatch.syspath_prepend(str(path))
    for argv, env in [
        (["--traceback", "run", str(config)], "0"),
        (["run", str(config), "--traceback"], "0"),
        (["run", str(config)], "1"),
    ]:
        monkeypatch.setenv("KWSCOMPRESS_TRACEBACK", env)
        assert main([*argv, "--out", str(out)] if argv[0] == "run" else argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "ValueError: bad shape" in err


def test_observer_errors_are_printed_and_reported(capsys, tmp_path: Path) -> None:
    run = Run(tmp_path / "run")
    errors = [
        {"plugin": "recorder", "hook": "kws_variant_finished", "error": "RuntimeError('bug')"},
        {"plugin": "tracker", "hook": "kws_stage_started", "error": "OSError('offline')"},
    ]
    run.record("plugin_errors", errors)
    _print_summary(run.path, run.results)
    assert capsys.readouterr().err.splitlines() == [
        "kwscompress: warning: plugin 'recorder' failed in kws_variant_finished: "
        "RuntimeError('bug')",
        "kwscompress: warning: plugin 'tracker' failed in kws_stage_started: OSError('offline')",
    ]
    paths = write_report(run)
    markdown = paths["markdown"].read_text()
    assert "2 plugin errors during the run (the run carried on)" in markdown
    assert "plugin 'tracker' in kws_stage_started: OSError('offline')" in markdown
    assert "recorder" in paths["html"].read_text()
    run.record("failed", {"stage": "train", "message": "interrupted"})
    markdown = write_report(run)["markdown"].read_text()
    assert "The run stopped in stage train: interrupted. The stages before it" in markdown
