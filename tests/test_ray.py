"""The ``ray`` executor on a real two-node Ray cluster started by the test (no mocks).

The cluster is two ``ray start`` processes on this machine, each a node with one CPU, the
second also declaring one (absent) GPU. The toy pruner and quantizer reach the workers the way
a third party's would: as an installed distribution with an entry point (a ``.dist-info`` on
the workers' ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from toys import TOY_CONFIG, DataToys

from kwscompress import Pipeline
from kwscompress.config import Config
from kwscompress.errors import KwsError
from kwscompress.plugins import get_plugin_manager

pytest.importorskip("ray")

TESTS = Path(__file__).parent

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

_STEPS_MODULE = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from kwscompress import hookimpl
    from toys import GridQuantizer, ZeroPruner
    from kwscompress.protocols import StepResult

    class DieOnce:
        name = "die_once"
        description = "kills its worker the first time (marker file)"
        def settings(self, values):
            return {"amount": 0.5, **values}
        def prune(self, model, context, **settings):
            marker = Path(os.environ["KWS_TEST_MARKER"])
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return StepResult(model, {"worker": os.getpid()})

    @hookimpl
    def kws_register_pruners():
        return [ZeroPruner(), DieOnce()]

    @hookimpl
    def kws_register_quantizers():
        return [GridQuantizer()]
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("raytoys")
    dist = folder / "kws_ray_toys-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kws-ray-toys\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[kwscompress]\nraytoys = kws_ray_toys\n")
    (folder / "kws_ray_toys.py").write_text(_STEPS_MODULE)
    return folder


@pytest.fixture(scope="module")
def cluster(plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A head node and a second node, both shut down at the end: address and marker file."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    marker = tmp_path_factory.mktemp("marker") / "died"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(TESTS)]),
        "KWS_TEST_MARKER": str(marker),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray 2.60 turns token authentication on for a head node when ~/.ray/auth_token exists
        # (any earlier ray.init writes one), and a joining node then fails: keep the test
        # cluster as the machine's state left it, without tokens.
        "RAY_AUTH_MODE": "disabled",
    }
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    try:
        for command in (
            [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
            [ray_bin, "start", f"--address={address}", "--num-gpus=1", *common],
        ):
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stderr[-3000:]
        yield {"address": address, "marker": marker}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _pipeline(pm, root: Path, run_dir: Path, recipes, sweep: dict[str, Any]) -> Pipeline:
    values = {
        **TOY_CONFIG,
        "compress": {"recipes": recipes},
        "sweep": sweep,
        "export": {"enabled": False},
        "deploy": {"enabled": False},
    }
    return Pipeline(Config.from_dict(values), plugin_manager=pm, run_dir=run_dir)


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    skip = {"seconds", "host_latency_ms", "cached", "node", "resources"}
    kept = {k: v for k, v in row.items() if k not in skip}
    kept["steps"] = [
        {**s, "info": {k: v for k, v in s.get("info", {}).items() if k != "seconds"}}
        for s in row["steps"]
    ]
    return kept


@pytest.fixture
def ray_pm(plugin_dir: Path, make_dataset, monkeypatch, tmp_path: Path):
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("KWSCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster fixture's nodes
    pm = get_plugin_manager()
    pm.register(DataToys(make_dataset()), name="datatoys")
    return pm


def test_sweep_runs_across_both_nodes_with_the_rows_of_a_local_run(
    cluster: dict[str, Any], ray_pm, tmp_path: Path, monkeypatch
) -> None:
    root = ray_pm.get_plugin("datatoys").root
    local = _pipeline(ray_pm, root, tmp_path / "local", RECIPES, {"executor": "local"})
    local.compress()
    # A fresh cache so that every variant really runs on the cluster.
    monkeypatch.setenv("KWSCOMPRESS_CACHE", str(tmp_path / "cache-ray"))
    remote = _pipeline(
        ray_pm, root, tmp_path / "ray", RECIPES, {"executor": "ray", "address": cluster["address"]}
    )
    remote.compress()
    local_rows = local.run_record.results["variants"]
    ray_rows = remote.run_record.results["variants"]
    assert remote.run_record.results["compress"]["evaluated"] == 6
    assert [_comparable(r) for r in ray_rows] == [_comparable(r) for r in local_rows]
    nodes = {r["node"] for r in ray_rows[1:]}
    assert len(nodes) == 2, nodes
    # The driver wrote the cache and the models, as a local sweep does.
    assert all((tmp_path / "ray" / "variants" / f"{r['id']}.pt").is_file() for r in ray_rows)
    saved = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert [r["id"] for r in saved["variants"]] == [r["id"] for r in local_rows]


def test_a_killed_worker_is_retried_and_gpu_requests_reach_the_task(
    cluster: dict[str, Any], ray_pm, tmp_path: Path
) -> None:
    root = ray_pm.get_plugin("datatoys").root
    recipes = [{"name": "die", "steps": [{"kind": "prune", "method": "die_once"}]}]
    sweep = {"executor": "ray", "address": cluster["address"], "num_gpus": 0.5, "retries": 2}
    pipeline = _pipeline(ray_pm, root, tmp_path / "run", recipes, sweep)
    pipeline.compress()
    (row,) = pipeline.run_record.results["variants"][1:]
    assert row["status"] == "ok", row["error"]
    # The first attempt's worker died (it wrote its pid); the retry ran in another process.
    died = int(cluster["marker"].read_text())
    assert row["steps"][0]["info"]["worker"] != died
    # The request for half a GPU was passed to Ray; with no real GPU, training used the CPU.
    assert row["resources"].get("GPU") == 0.5
    assert row["device"] == "cpu"


def test_ray_without_a_cluster_is_one_clear_error(ray_pm, tmp_path: Path) -> None:
    root = ray_pm.get_plugin("datatoys").root
    pipeline = _pipeline(
        ray_pm, root, tmp_path / "run", RECIPES[1:], {"executor": "ray", "address": "nowhere"}
    )
    with pytest.raises(KwsError, match=r"\[sweep\] address must be"):
        pipeline.compress()


def test_ray_executor_is_listed(ray_pm) -> None:
    executors = ray_pm.components("executor")
    assert executors["ray"].plugin == "ray" and executors["local"].plugin == "executors"
    assert shutil.which("ray") or (Path(sys.executable).parent / "ray").exists()
