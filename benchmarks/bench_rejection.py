"""What the rejection work costs in the demo: stage seconds before and after, printed as JSON.

"Before" is the default config with the rejection data and training turned off (``tiny_conv``,
no confusables or other speech, ``_unknown_`` at 25 %, no speed, band-limit or level
augmentation, no stream examples, no frontend warm-up, plain loss, no frequency warping, 200
epochs, no stream stage);
"after" is the default config (``tc_ds_cnn``, 80 epochs). Both run ``data``, ``features``,
``train``, ``evaluate`` (and ``stream`` after) in a fresh process with a fresh cache, compression,
export and deployment off. On the 2-core reference machine "after" took 54 s more (76 -> 130 s;
the whole ``make demo`` must stay under 5 minutes); the numbers depend on what else the machine
runs, so both configs are measured in the same session, one after the other.

Usage: ``python benchmarks/bench_rejection.py`` (about ten minutes), or
``python benchmarks/bench_rejection.py --results BEFORE.json AFTER.json`` to compare two
finished runs' ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OFF = """
[compress]
enabled = false
[export]
enabled = false
[deploy]
enabled = false
"""

BEFORE = """
[model]
name = "tiny_conv"
[features]
warmup_ms = 0
[data]
stream_examples = 0.0
unknown_percentage = 25.0
speed_frequency = 0.0
band_limit_frequency = 0.0
level_db = 0.0
[data.synth]
confusables = 0
other_speech_repeats = 0
[train]
class_weights = "none"
freq_warp = 0.0
epochs = 200
lr_step_epochs = 150
[stream]
enabled = false
"""

DATA_STAGES = ("data", "features", "train")


def _run(name: str, toml: str, work: Path) -> dict[str, Any]:
    config = work / f"{name}.toml"
    config.write_text(f'[run]\nname = "{name}"\n' + OFF + toml)
    env = {**os.environ, "KWSCOMPRESS_CACHE": str(work / f"cache-{name}")}
    env["KWSCOMPRESS_NO_PROGRESS"] = "1"
    subprocess.run(
        [sys.executable, "-m", "kwscompress.cli", "run", str(config), "--out", str(work)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return json.loads((work / name / "results.json").read_text())


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Stage seconds, training clips and the headline numbers of one run."""
    stages = {k: v["seconds"] for k, v in results.items() if isinstance(v, dict) and "seconds" in v}
    evaluation = results.get("evaluate", {})
    stream = results.get("stream") or {}
    return {
        "stages": stages,
        "data_and_training_seconds": round(sum(stages.get(s, 0.0) for s in DATA_STAGES), 1),
        "training_clips": (
            results.get("data", {}).get("split_summary", {}).get("training", {})
        ).get("total"),
        "test_accuracy": evaluation.get("accuracy", {}).get("testing"),
        "unknown_recall": (evaluation.get("rejection") or {}).get("unknown_recall"),
        "stream_false_reject_rate": stream.get("false_reject_rate"),
        "stream_false_accepts_per_hour": stream.get("false_accepts_per_hour"),
    }


def main() -> None:
    """Measure (or read) both runs and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs=2, metavar=("BEFORE", "AFTER"), type=Path)
    args = parser.parse_args()
    if args.results:
        before, after = (json.loads(p.read_text()) for p in args.results)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            before = _run("before", BEFORE, Path(tmp))
            after = _run("after", "", Path(tmp))
    report = {"cpus": os.cpu_count(), "before": summary(before), "after": summary(after)}
    report["added_data_and_training_seconds"] = round(
        report["after"]["data_and_training_seconds"]
        - report["before"]["data_and_training_seconds"],
        1,
    )
    report["stream_stage_seconds"] = report["after"]["stages"].get("stream")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
