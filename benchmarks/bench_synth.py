"""Measure synthesis speed of the synthetic dataset; prints one JSON object.

Usage: ``python benchmarks/bench_synth.py [--speakers N] [--repeats N] [--workers N]
[--flite-share S]`` (default 0, espeak-ng alone, as the config; ``flite_speakers`` in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from kwscompress.config import SynthConfig
from kwscompress.data.synth import planned_clip_count, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--unknown-repeats", type=int, default=1)
    parser.add_argument("--noise-files", type=int, default=6)
    parser.add_argument("--noise-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--flite-share", type=float, default=SynthConfig.flite_share)
    args = parser.parse_args()
    config = SynthConfig(
        speakers=args.speakers,
        repeats=args.repeats,
        unknown_repeats=args.unknown_repeats,
        noise_files=args.noise_files,
        noise_seconds=args.noise_seconds,
        flite_share=args.flite_share,
    )
    wanted = ["yes", "no"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = synthesize(Path(tmp) / "set", config, wanted, workers=args.workers)
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "synth",
                "config": vars(config),
                "clips": summary["clips"],
                "planned_clips": planned_clip_count(config, wanted),
                "seconds": round(seconds, 3),
                "clips_per_second": round(summary["clips"] / seconds, 1),
                "workers": summary["workers"],
                "flite_speakers": summary["flite_speakers"],
                "cores_available": len(os.sched_getaffinity(0)),
                "noise_audio_seconds": config.noise_files * config.noise_seconds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
