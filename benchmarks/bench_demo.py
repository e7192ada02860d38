"""Wall-clock seconds of ``kwscompress demo --quick`` and ``kwscompress demo``, printed as JSON.

Targets: ``demo --quick`` <= 60 s and the full demo <= 5 min on a 2-core machine. Each command
runs in a fresh process with a fresh cache (so synthesis and feature extraction are included),
then once more with the cache warm. Stage times come from the run's results.json.

Usage: ``python benchmarks/bench_demo.py [--quick-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"demo-quick": 60.0, "demo": 300.0}


def _time(args: list[str], out: Path, cache: Path) -> dict[str, object]:
    env = {**os.environ, "KWSCOMPRESS_CACHE": str(cache), "KWSCOMPRESS_NO_PROGRESS": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", *args, "--out", str(out)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    name = "demo-quick" if "--quick" in args else "demo"
    results = json.loads((out / name / "results.json").read_text())
    stages = {k: v["seconds"] for k, v in results.items() if isinstance(v, dict) and "seconds" in v}
    return {
        "seconds": round(seconds, 1),
        "stages": stages,
        "test_accuracy": results["evaluate"]["accuracy"]["testing"],
    }


def main() -> None:
    """Time the demos and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-only", action="store_true", help="skip the full demo")
    args = parser.parse_args()
    report: dict[str, object] = {"cpus": os.cpu_count()}
    variants = [["demo", "--quick"]] if args.quick_only else [["demo", "--quick"], ["demo"]]
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            name = "demo-quick" if "--quick" in variant else "demo"
            cache = Path(tmp) / f"cache-{name}"
            cold = _time(variant, Path(tmp) / f"cold-{name}", cache)
            warm = _time(variant, Path(tmp) / f"warm-{name}", cache)
            report[name] = {
                "target_seconds": TARGETS[name],
                "cold": cold,
                "warm": warm,
                "within_target": cold["seconds"] <= TARGETS[name],
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
