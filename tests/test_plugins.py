"""The plugin system: registration, lookup, lifecycle hooks, debugging switches, and the meta-test
that every hook is documented and exercised."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from toys import DataToys

from kwscompress import Pipeline, hookimpl, hookspecs
from kwscompress.config import Config
from kwscompress.errors import KwsError, UnknownComponentError
from kwscompress.plugins import COMPONENT_HOOKS, get_plugin_manager
from kwscompress.protocols import StepResult

HOOK_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("kws_"))
CALLED: set[str] = set()
"""Hooks called through the ``pm`` fixture's manager during this module's tests."""


@pytest.fixture
def pm(pm):
    """The shared ``pm`` fixture, with a monitor recording each hook called."""
    undo = pm.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: CALLED.add(hook_name), lambda *args: None
    )
    yield pm
    undo()


class ToyComponent:
    description = "test-only component"

    def __init__(self, name: str):
        self.name = name


class ToyPruner:
    name = "toy_pruner"
    description = "test-only pruner that zeroes nothing"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        return {"amount": 0.5, **values}

    def prune(self, model: Any, context: Any, **settings: Any) -> StepResult:
        return StepResult(model, {"amount": settings["amount"]})


def test_every_hook_has_a_docstring() -> None:
    for name in HOOK_NAMES:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 20, f"hook {name} has no docstring"


def test_builtin_components_are_found_through_entry_points(pm) -> None:
    rows = {(c.kind, c.name): c for c in pm.all_components()}
    for kind, name in [
        ("dataset", "synthetic"),
        ("dataset", "speech_commands"),
        ("feature_extractor", "micro"),
        ("model", "tiny_conv"),
        ("model", "ds_cnn"),
    ]:
        assert (kind, name) in rows, (kind, name)
        assert rows[kind, name].version == "0.1.0"


def test_unknown_component_lists_valid_names(pm) -> None:
    with pytest.raises(UnknownComponentError) as info:
        pm.component("model", "tiny_convv")
    assert "unknown model 'tiny_convv'; valid names:" in str(info.value)
    assert "tiny_conv" in str(info.value) and "ds_cnn" in str(info.value)
    config = Config.from_dict({"features": {"name": "melody"}})
    with pytest.raises(UnknownComponentError, match="unknown feature extractor 'melody'"):
        Pipeline(config, plugin_manager=pm)


def test_duplicate_component_names_name_both_plugins(pm) -> None:
    spec = pm.component("model", "tiny_conv")

    class Dup:
        @hookimpl
        def kws_register_models(self) -> list[Any]:
            return [spec]

    pm.register(Dup(), name="dup-plugin")
    with pytest.raises(
        KwsError,
        match="'tiny_conv' is registered twice: by plugin 'models' and by plugin 'dup-plugin'",
    ):
        pm.components("model")


class Recorder(DataToys):
    """An observer plugin that records lifecycle calls, and raises on one to prove isolation."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def kws_register_pruners(self) -> list[Any]:
        return [ToyPruner()]

    @hookimpl
    def kws_stage_started(self, stage: str, run: Any) -> None:
        self.calls.append(("started", stage))

    @hookimpl
    def kws_stage_finished(self, stage: str, run: Any, summary: dict[str, Any]) -> None:
        assert run.results[stage] is summary
        self.calls.append(("finished", stage))

    @hookimpl
    def kws_variant_finished(self, variant: str, metrics: dict[str, Any], run: Any) -> None:
        self.calls.append(("variant", variant))
        raise RuntimeError("observer bug")


def test_adhoc_plugin_components_drive_the_pipeline(pm, make_dataset, tmp_path: Path) -> None:
    recorder = Recorder(make_dataset())
    pm.register(recorder, name="recorder")
    config = Config.from_dict(
        {
            "data": {"source": "tones", "silence_percentage": 50, "unknown_percentage": 50},
            "features": {"name": "toy"},
            "train": {"epochs": 3, "batch_size": 8},
            "profile": {"runs": 10, "warmup": 1},
            "compress": {
                "recipes": [{"name": "toy", "steps": [{"kind": "prune", "method": "toy_pruner"}]}]
            },
            "export": {"enabled": False},
            "deploy": {"enabled": False},
        }
    )
    run = Pipeline(config, plugin_manager=pm, run_dir=tmp_path / "run").run()

    def calls(*stages: str) -> list[tuple[str, str]]:
        return [call for stage in stages for call in (("started", stage), ("finished", stage))]

    assert recorder.calls == [
        *calls("data", "features", "train", "evaluate", "stream"),
        ("started", "compress"),
        ("variant", "float"),
        ("variant", "toy-0.5"),
        ("finished", "compress"),
        *calls("estimate", "profile", "report"),
    ]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["source"] == "tones"
    assert results["features"]["extractor"] == "toy"
    assert results["features"]["shape"] == [49, 40]
    # The raising observer is reported by name and the run still finished.
    assert (
        results["plugin_errors"]
        == [
            {
                "plugin": "recorder",
                "hook": "kws_variant_finished",
                "error": "RuntimeError('observer bug')",
            }
        ]
        * 2
    )
    assert "finished" in results
    assert [r["id"] for r in run.results["variants"]] == ["float", "toy-0.5"]
    assert run.results["variants"][1]["steps"][0]["info"] == {"amount": 0.5}


def test_registration_hooks_of_every_kind_reach_the_listing(pm) -> None:
    extra = type("Extra", (), {})()
    for kind, hook_name in COMPONENT_HOOKS.items():
        component = ToyPruner() if kind == "pruner" else ToyComponent(f"toy_{kind}")
        setattr(extra, hook_name, hookimpl(lambda component=component: [component]))
    pm.register(extra, name="extra")
    rows = {(c.kind, c.name): c for c in pm.all_components()}
    for kind in COMPONENT_HOOKS:
        name = "toy_pruner" if kind == "pruner" else f"toy_{kind}"
        assert rows[kind, name].plugin == "extra"
        assert rows[kind, name].version == "unknown"
    assert pm.component("pruner", "toy_pruner").prune("m", None, amount=0.5).model == "m"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_plugins_command_lists_every_component_as_json() -> None:
    result = _cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {
        "kind": "model",
        "name": "tiny_conv",
        "plugin": "models",
        "version": "0.1.0",
    }.items() <= next(r for r in rows if r["name"] == "tiny_conv").items()
    assert {r["kind"] for r in rows} >= {"dataset", "feature_extractor", "model"}


def test_trace_variable_prints_hook_calls() -> None:
    result = _cli("plugins", "--json", env={"KWSCOMPRESS_TRACE_PLUGINS": "1"})
    assert result.returncode == 0
    assert "hook kws_register_models(" in result.stderr
    assert "returned" in result.stderr


def test_load_plugins_variable_limits_external_plugins_only(monkeypatch, tmp_path: Path) -> None:
    # A third-party distribution declared through a .dist-info on sys.path.
    dist = tmp_path / "kws_thirdparty-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kws-thirdparty\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[kwscompress]\nthirdparty = kws_thirdparty_plugin\n")
    (tmp_path / "kws_thirdparty_plugin.py").write_text(
        "from kwscompress import hookimpl\n"
        "class P:\n    name = 'third'\n    description = 'third-party pruner'\n"
        "    def prune(self, model, amount, **o):\n        return model\n"
        "@hookimpl\ndef kws_register_pruners():\n    return [P()]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = get_plugin_manager().components("pruner")
    assert loaded["third"].plugin == "thirdparty" and loaded["third"].version == "1.2.3"
    monkeypatch.setenv("KWSCOMPRESS_LOAD_PLUGINS", "")
    limited = get_plugin_manager()
    assert "third" not in limited.components("pruner")
    assert "tiny_conv" in limited.components("model")  # built-ins always load
    monkeypatch.setenv("KWSCOMPRESS_LOAD_PLUGINS", "thirdparty")
    assert "third" in get_plugin_manager().components("pruner")


def test_every_hook_was_called_by_the_tests_above() -> None:
    # Runs last in this module: the pm fixture's monitor saw every hook these tests called.
    if not CALLED:
        pytest.skip("run the whole module: the other tests make the calls this one checks")
    assert set(HOOK_NAMES) <= CALLED, f"hooks no test calls: {set(HOOK_NAMES) - CALLED}"
