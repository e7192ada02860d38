"""The default demo sweep on each executor, printed as JSON.

Trains the default demo model once (data, features and training come from one warm cache),
then runs the default compression sweep with an empty variant cache on: the local executor in
this process, the local executor with 2 worker processes, and Ray with 2 CPUs started on this
machine (``address = "local"``). Prints wall seconds of each, the speed-up over one process,
and Ray's start-up overhead (``ray.init`` to the first finished trivial task). Rows are
compared too: apart from timings, every executor must give the same rows.

Usage: ``python benchmarks/bench_sweep.py [--quick]`` (``--quick``: the ``demo --quick`` config)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kwscompress import Pipeline
from kwscompress.config import Config, quick_overrides

SKIP = {"seconds", "host_latency_ms", "cached", "node", "resources", "measured_at"}


def _comparable(value: Any) -> Any:
    """``value`` without the fields that may differ between runs (timings, where it ran)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in SKIP}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _ray_startup_seconds() -> float:
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.get(ray.remote(lambda: 1).remote())
    seconds = time.perf_counter() - started
    ray.shutdown()
    return seconds


def main() -> None:
    """Run the sweeps and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo --quick config")
    args = parser.parse_args()
    os.environ.setdefault("KWSCOMPRESS_NO_PROGRESS", "1")
    base = Config()
    if args.quick:
        base = base.updated(quick_overrides())
    base = base.updated({"export": {"enabled": False}, "deploy": {"enabled": False}})
    report: dict[str, Any] = {"cpus": os.cpu_count(), "config": "quick" if args.quick else "demo"}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KWSCOMPRESS_CACHE"] = str(Path(tmp) / "cache")
        trainer = Pipeline(base, run_dir=Path(tmp) / "baseline")
        trainer.train()
        executors = {
            "local-1": {"executor": "local", "workers": 1},
            "local-2": {"executor": "local", "workers": 2},
            "ray-2": {"executor": "ray", "address": "local", "num_cpus": 1},
        }
        reference = None
        for name, sweep in executors.items():
            shutil.rmtree(Path(tmp) / "cache" / "variants", ignore_errors=True)
            pipeline = Pipeline(base.updated({"sweep": sweep}), run_dir=Path(tmp) / name)
            pipeline.feature_sets, pipeline.model = trainer.feature_sets, trainer.model
            started = time.perf_counter()
            rows = pipeline.compress()
            seconds = time.perf_counter() - started
            rows_match = reference is None or _comparable(rows) == reference
            reference = reference or _comparable(rows)
            report[name] = {
                "seconds": round(seconds, 1),
                "variants": len(rows),
                "failed": sum(r["status"] == "failed" for r in rows),
                "rows_equal_local_1": rows_match,
            }
        one = report["local-1"]["seconds"]
        for name in ("local-2", "ray-2"):
            report[name]["speedup_over_one_process"] = round(one / report[name]["seconds"], 2)
        report["ray_startup_seconds"] = round(_ray_startup_seconds(), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
