"""Compression sweeps: recipe expansion, variant rows, failures, the cache, resume, executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from toys import TOY_CONFIG, ToyPlugin

from kwscompress import Pipeline, hookimpl
from kwscompress.compress.recipes import expand_recipes, select_variants
from kwscompress.config import Config, RecipeConfig
from kwscompress.errors import ConfigError, KwsError, UnknownComponentError
from kwscompress.report.figures import pareto_front

ROW_KEYS = {
    "id",
    "recipe",
    "key",
    "status",
    "error",
    "steps",
    "accuracy",
    "parameters",
    "nonzero_parameters",
    "macs",
    "weight_bits",
    "weight_bytes",
    "host_latency_ms",
    "seconds",
    "cached",
}
TIMING_KEYS = ("seconds", "host_latency_ms", "cached")

RECIPES = [
    {
        "name": "zero",
        "steps": [
            {"kind": "prune", "method": "toy_zero", "amount": [0.3, 0.9]},
            {"kind": "finetune", "epochs": [0, 1]},
        ],
    },
    {"name": "grid", "steps": [{"kind": "quantize", "method": "toy_grid", "bits": [2, 8]}]},
]


@pytest.fixture
def toy_pm(pm, make_dataset, tmp_path: Path, monkeypatch):
    """The toys registered, and a cache of this test's own (finished variants are cached)."""
    monkeypatch.setenv("KWSCOMPRESS_CACHE", str(tmp_path / "cache"))
    pm.register(ToyPlugin(make_dataset()), name="toys")
    return pm


def _config(recipes: list[dict[str, Any]], **tables: Any) -> Config:
    values = {
        **TOY_CONFIG,
        "compress": {"recipes": recipes},
        "export": {"enabled": False},
        "deploy": {"enabled": False},
        **tables,
    }
    return Config.from_dict(values)


def _sweep(pm, tmp_path: Path, recipes, name: str = "run", **tables: Any) -> Pipeline:
    pipeline = Pipeline(_config(recipes, **tables), plugin_manager=pm, run_dir=tmp_path / name)
    pipeline.compress()
    return pipeline


def _without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def strip(row: dict[str, Any]) -> dict[str, Any]:
        row = {k: v for k, v in row.items() if k not in TIMING_KEYS}
        row["steps"] = [
            {**s, "info": {k: v for k, v in s.get("info", {}).items() if k != "seconds"}}
            for s in row["steps"]
        ]
        return row

    return [strip(r) for r in rows]


def test_recipes_expand_into_every_combination_with_complete_settings(toy_pm) -> None:
    specs = expand_recipes([RecipeConfig(**r) for r in RECIPES], toy_pm)
    assert [s.id for s in specs] == [
        "zero-0.3-ft0",
        "zero-0.3-ft1",
        "zero-0.9-ft0",
        "zero-0.9-ft1",
        "grid-2b",
        "grid-8b",
    ]
    first = specs[0]
    # The pruner's defaults are filled in, so the row says everything that shaped it.
    assert first.steps[0].settings == {"amount": 0.3, "fail": False}
    assert first.steps[1].as_dict() == {
        "kind": "finetune",
        "method": "finetune",
        "settings": {"epochs": 0},
    }
    assert [s.weight_bits for s in specs] == [32, 32, 32, 32, 2, 8]


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"name": "", "steps": []}, "recipe name ''"),
        ({"name": "a/b", "steps": [{"kind": "finetune"}]}, "recipe name 'a/b'"),
        ({"name": "x", "steps": []}, "needs at least one step"),
        ({"name": "x", "steps": [{"kind": "shrink"}]}, "kind must be one of prune"),
        ({"name": "x", "steps": [{"kind": "prune"}]}, "needs a method"),
        ({"name": "x", "steps": [{"kind": "finetune", "lr": 1}]}, "unknown finetune key 'lr'"),
        ({"name": "x", "steps": [{"kind": "finetune", "epochs": -1}]}, "epochs must be"),
        (
            {"name": "x", "steps": [{"kind": "prune", "method": "toy_zero", "speed": 1}]},
            "prune 'toy_zero': unknown key 'speed'",
        ),
        (
            {"name": "x", "steps": [{"kind": "quantize", "method": "toy_grid", "bits": [4, 9]}]},
            "bits must be 2..8, got 9",
        ),
        (
            {"name": "x", "steps": [{"kind": "prune", "method": "toy_zero", "amount": []}]},
            "amount is an empty list",
        ),
    ],
)
def test_bad_recipes_name_the_recipe_and_key(toy_pm, recipe, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        expand_recipes([RecipeConfig(**recipe)], toy_pm)


def test_unknown_method_lists_the_valid_ones_before_any_work(toy_pm) -> None:
    recipes = [{"name": "x", "steps": [{"kind": "prune", "method": "toy_zeroo"}]}]
    with pytest.raises(UnknownComponentError, match=r"unknown pruner 'toy_zeroo'.*toy_zero"):
        Pipeline(_config(recipes), plugin_manager=toy_pm)
    with pytest.raises(ConfigError, match=r"\[export\] variants: 'grid-3b' matches no variant"):
        Pipeline(
            _config(RECIPES, export={"variants": ["grid-3b"]}),
            plugin_manager=toy_pm,
        )


def test_sweep_rows_float_first_in_recipe_order(toy_pm, tmp_path: Path) -> None:
    pipeline = _sweep(toy_pm, tmp_path, RECIPES)
    rows = pipeline.run_record.results["variants"]
    assert [r["id"] for r in rows] == [
        "float",
        "zero-0.3-ft0",
        "zero-0.3-ft1",
        "zero-0.9-ft0",
        "zero-0.9-ft1",
        "grid-2b",
        "grid-8b",
    ]
    for row in rows:
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["status"] == "ok" and row["error"] is None
        assert set(row["accuracy"]) == {"training", "validation", "testing"}
    by_id = {r["id"]: r for r in rows}
    assert by_id["float"]["parameters"] == 16652 and by_id["float"]["macs"] == 336000
    assert by_id["float"]["weight_bytes"] == 16652 * 4
    # The toy pruner zeroes 90 % of each weight tensor; without fine-tuning they stay zero.
    zeroed = by_id["zero-0.9-ft0"]
    assert zeroed["nonzero_parameters"] == pytest.approx(16652 * 0.1, rel=0.02)
    assert zeroed["steps"][0]["info"] == {"zeroed": 0.9}
    assert by_id["zero-0.9-ft1"]["steps"][1]["info"]["epochs"] == 1
    # Quantized variants: weight bytes at their width, biases at 32 bits.
    assert by_id["grid-8b"]["weight_bytes"] == 640 + 16000 + 4 * (8 + 4)
    assert (tmp_path / "run" / "variants" / "grid-2b.pt").is_file()
    summary = pipeline.run_record.results["compress"]
    assert summary["evaluated"] == 6 and summary["cached"] == 0 and summary["failed"] == 0


def test_every_row_measures_rejection_like_the_evaluate_stage(toy_pm, tmp_path: Path) -> None:
    pipeline = Pipeline(_config(RECIPES), plugin_manager=toy_pm, run_dir=tmp_path / "run")
    evaluation = pipeline.evaluate()
    rows = {r["id"]: r for r in pipeline.compress()}
    # The float row is the trained model, scored on the same probes as the evaluate stage.
    for key in ("rejection", "robustness"):
        assert rows["float"][key] == evaluation[key]
    clips = evaluation["rejection"]["words"]["by_kind"]["filler"]["clips"]
    for row in rows.values():
        assert set(row["rejection"]) == {
            "unknown_recall", "non_keyword_clips", "false_accept_rate", "words",
        }  # fmt: skip
        assert row["rejection"]["words"]["by_kind"]["filler"]["clips"] == clips
        assert set(row["robustness"]) == {"clips", "clean", "telephone", "lowpass4k", "fast"}
    # Each variant is scored with its own model: the stored model gives its row's records.
    from kwscompress.rejection import score_probes
    from kwscompress.stages.compress import load_variant_model
    from kwscompress.train import predict

    test = pipeline.feature_sets.splits["testing"].first_copy
    for variant in ("zero-0.9-ft0", "grid-2b"):
        model = load_variant_model(pipeline.run_dir, variant)
        predicted = predict(model, test.features).argmax(axis=1)
        found = score_probes(model, pipeline.rejection_probes(), test.labels, predicted)
        assert {k: rows[variant][k] for k in found} == found


def test_a_new_row_format_measures_cached_variants_again(toy_pm, tmp_path: Path, monkeypatch):
    from kwscompress.stages import compress

    first = _sweep(toy_pm, tmp_path, RECIPES[1:], name="first")
    assert first.run_record.results["compress"]["evaluated"] == 2
    monkeypatch.setattr(compress, "ROW_FORMAT", compress.ROW_FORMAT + 1)
    again = _sweep(toy_pm, tmp_path, RECIPES[1:], name="again")
    assert again.run_record.results["compress"]["evaluated"] == 2


def test_variants_with_the_most_training_start_first(toy_pm, tmp_path: Path, monkeypatch) -> None:
    from kwscompress.executors import LocalExecutor

    started: list[str] = []
    run = LocalExecutor.run

    def spy(self, task, shared, jobs, options, on_done) -> None:
        started.extend(job.spec.id for job in jobs)
        run(self, task, shared, jobs, options, on_done)

    monkeypatch.setattr(LocalExecutor, "run", spy)
    pipeline = _sweep(toy_pm, tmp_path, RECIPES, sweep={"workers": 1})
    # A fine-tuned variant would otherwise start after the cheap ones of its recipe; ties keep
    # the recipe order, and the rows keep the recipe order whatever order the jobs ran in.
    assert started == [
        "zero-0.3-ft1",
        "zero-0.9-ft1",
        "zero-0.3-ft0",
        "zero-0.9-ft0",
        "grid-2b",
        "grid-8b",
    ]
    rows = pipeline.run_record.results["variants"]
    assert [r["id"] for r in rows][1:3] == ["zero-0.3-ft0", "zero-0.3-ft1"]


def test_a_failing_plugin_fails_its_variant_alone(toy_pm, tmp_path: Path) -> None:
    recipes = [
        {"name": "bad", "steps": [{"kind": "prune", "method": "toy_zero", "fail": True}]},
        RECIPES[1],
    ]
    pipeline = _sweep(toy_pm, tmp_path, recipes)
    rows = {r["id"]: r for r in pipeline.run_record.results["variants"]}
    assert rows["bad-0.5"]["status"] == "failed"
    assert rows["bad-0.5"]["error"] == {
        "plugin": "toys",
        "component": "pruner 'toy_zero'",
        "message": "RuntimeError: toy pruner asked to fail",
    }
    assert rows["grid-8b"]["status"] == "ok"
    assert pipeline.run_record.results["compress"]["failed"] == 1


def test_rerun_takes_every_variant_from_the_cache_with_identical_rows(
    toy_pm, tmp_path: Path
) -> None:
    first = _sweep(toy_pm, tmp_path, RECIPES, name="first").run_record.results
    second = _sweep(toy_pm, tmp_path, RECIPES, name="second").run_record.results
    assert second["compress"]["evaluated"] == 0 and second["compress"]["cached"] == 6
    assert [r["cached"] for r in second["variants"]] == [False] + [True] * 6
    assert _without_timings(second["variants"]) == _without_timings(first["variants"])


def test_worker_pool_gives_the_rows_of_one_process(toy_pm, tmp_path: Path, monkeypatch) -> None:
    single = _sweep(toy_pm, tmp_path, RECIPES, name="one").run_record.results["variants"]
    # A fresh cache, so the pool evaluates every variant; its forked workers inherit toy_pm.
    monkeypatch.setenv("KWSCOMPRESS_CACHE", str(tmp_path / "other-cache"))
    pooled = _sweep(toy_pm, tmp_path, RECIPES, name="pool", sweep={"workers": 2})
    results = pooled.run_record.results
    assert results["compress"]["evaluated"] == 6
    assert _without_timings(results["variants"]) == _without_timings(single)


class DyingPruner:
    """Kills its own process the first time it runs (a marker file remembers)."""

    name = "dying"
    description = "test-only pruner whose first run kills the worker"

    def __init__(self, marker: Path):
        self.marker = marker

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        return {"amount": 0.5, **values}

    def prune(self, model: Any, context: Any, **settings: Any) -> Any:
        from kwscompress.protocols import StepResult

        if not self.marker.exists():
            self.marker.write_text("died once")
            os._exit(3)
        return StepResult(model, {"survived": True})

    @hookimpl
    def kws_register_pruners(self) -> list[Any]:
        return [self]


def test_a_worker_that_dies_is_retried(toy_pm, tmp_path: Path) -> None:
    toy_pm.register(DyingPruner(tmp_path / "marker"), name="dying-plugin")
    recipes = [{"name": "die", "steps": [{"kind": "prune", "method": "dying"}]}, RECIPES[1]]
    results = _sweep(toy_pm, tmp_path, recipes, sweep={"workers": 2}).run_record.results
    rows = {r["id"]: r for r in results["variants"]}
    assert (tmp_path / "marker").read_text() == "died once"
    assert rows["die-0.5"]["status"] == "ok"
    assert rows["die-0.5"]["steps"][0]["info"] == {"survived": True}
    assert all(r["status"] == "ok" for r in rows.values())


def test_worker_deaths_beyond_the_retries_fail_the_variant(toy_pm, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class AlwaysDying(DyingPruner):
        def prune(self, model: Any, context: Any, **settings: Any) -> Any:
            os._exit(3)

    toy_pm.register(AlwaysDying(marker), name="dying-plugin")
    recipes = [{"name": "die", "steps": [{"kind": "prune", "method": "dying"}]}]
    recipes.append({"name": "grid", "steps": [{"kind": "quantize", "method": "toy_grid"}]})
    results = _sweep(
        toy_pm, tmp_path, recipes, sweep={"workers": 2, "retries": 1}
    ).run_record.results
    rows = {r["id"]: r for r in results["variants"]}
    assert rows["die-0.5"]["status"] == "failed"
    assert rows["die-0.5"]["error"]["component"] == "executor"
    assert "died 2 times" in rows["die-0.5"]["error"]["message"]


_KILLED_SWEEP = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from toys import TOY_CONFIG, ToyPlugin
    from kwscompress import Pipeline, hookimpl
    from kwscompress.config import Config
    from kwscompress.plugins import get_plugin_manager
    from kwscompress.protocols import StepResult

    class Killer:
        name = "killer"
        description = "SIGKILLs the whole run the first time"
        def settings(self, values):
            return {{"amount": 0.5, **values}}
        def prune(self, model, context, **settings):
            marker = Path({marker!r})
            if not marker.exists():
                marker.write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)
            return StepResult(model, {{}})
        @hookimpl
        def kws_register_pruners(self):
            return [self]

    pm = get_plugin_manager()
    pm.register(ToyPlugin(Path({root!r})), name="toys")
    pm.register(Killer(), name="killer")
    recipes = [
        {{"name": "grid", "steps": [{{"kind": "quantize", "method": "toy_grid", "bits": [2, 8]}}]}},
        {{"name": "kill", "steps": [{{"kind": "prune", "method": "killer"}}]}},
        {{"name": "zero", "steps": [{{"kind": "prune", "method": "toy_zero"}}]}},
    ]
    values = {{**TOY_CONFIG, "compress": {{"recipes": recipes}},
              "export": {{"enabled": False}}, "deploy": {{"enabled": False}}}}
    pipeline = Pipeline(Config.from_dict(values), plugin_manager=pm, run_dir={run!r})
    pipeline.compress()
    print(pipeline.run_record.results["compress"]["evaluated"])
    """
)


def test_a_killed_sweep_resumes_with_only_the_missing_variants(
    make_dataset, tmp_path: Path
) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(
        _KILLED_SWEEP.format(
            tests=str(Path(__file__).parent),
            marker=str(tmp_path / "marker"),
            root=str(make_dataset()),
            run=str(tmp_path / "run"),
        )
    )
    env = {**os.environ, "KWSCOMPRESS_CACHE": str(tmp_path / "cache")}
    killed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["id"] for r in partial["variants"]] == ["float", "grid-2b", "grid-8b"]
    resumed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Training is repeated (the same seed gives the same baseline), the two grid variants come
    # from the cache: only the killed variant and the one after it are evaluated.
    assert resumed.stdout.strip().splitlines()[-1] == "2"
    final = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["id"] for r in final["variants"]] == [
        "float",
        "grid-2b",
        "grid-8b",
        "kill-0.5",
        "zero-0.5",
    ]
    assert [r["cached"] for r in final["variants"]] == [False, True, True, False, False]


def test_export_and_deploy_take_ids_and_patterns(toy_pm) -> None:
    ids = ["float", "zero-0.3-ft0", "zero-0.3-ft1", "zero-0.9-ft1", "grid-8b"]
    assert select_variants(["zero-*-ft1", "float"], ids, "export") == [
        "float",
        "zero-0.3-ft1",
        "zero-0.9-ft1",
    ]
    with pytest.raises(ConfigError, match=r"\[export\] variants: 'qat-\*' matches no variant"):
        select_variants(["qat-*"], ids, "export")
    pipeline = Pipeline(
        _config(RECIPES, export={"variants": ["grid-*"]}, deploy={"variants": ["grid-8b"]}),
        plugin_manager=toy_pm,
    )
    assert pipeline.export_ids == ["grid-2b", "grid-8b"] and pipeline.deploy_ids == ["grid-8b"]
    with pytest.raises(ConfigError, match=r"'zero-0\.3-ft0' must also be exported"):
        Pipeline(
            _config(RECIPES, export={"variants": ["grid-*"]}, deploy={"variants": ["zero-*"]}),
            plugin_manager=toy_pm,
        )


def test_pareto_front_keeps_only_unbeaten_points() -> None:
    points = [(100, 0.9), (50, 0.85), (50, 0.7), (10, 0.6), (20, 0.5), (200, 0.88)]
    assert pareto_front(points) == [3, 1, 0]


def test_ray_executor_without_ray_names_the_extra(monkeypatch) -> None:
    from kwscompress_ray.executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    with pytest.raises(KwsError, match=r"pip install 'kwscompress\[ray\]'"):
        import_ray()
