"""Throughput of the built-in feature extractors, printed as JSON.

Each extractor first runs once on the clips untimed (TensorFlow import, graph tracing, torchaudio
set-up: the one-off cost, reported as ``first_call_seconds``), then ``--repeats`` timed runs over
the same clips; ``clips_per_second`` is from the fastest run. Clips are uniform noise of 1 s at
16 kHz, fed in chunks of 256 as the features stage does.

Usage: ``python benchmarks/bench_features.py [--clips 200] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from kwscompress.config import FeatureConfig
from kwscompress_features import kws_register_feature_extractors

RATE = 16000
CHUNK = 256


def main() -> None:
    """Measure every extractor and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="clips per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per extractor")
    args = parser.parse_args()

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (args.clips, RATE)).astype(np.float32)
    config = FeatureConfig()
    results = {}
    for extractor in kws_register_feature_extractors():
        start = time.perf_counter()
        run(extractor, audio, config)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run(extractor, audio, config)
            times.append(time.perf_counter() - start)
        results[extractor.name] = {
            "clips_per_second": round(args.clips / min(times), 1),
            "seconds": [round(t, 4) for t in times],
            "first_call_seconds": round(first, 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "feature extraction, 1 s clips at 16 kHz, 30/20 ms, 40 bins",
                "n": args.clips,
                "repeats": args.repeats,
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "tensorflow_threads": "TensorFlow default (one per core)",
                "load_average_1min": round(os.getloadavg()[0], 2),
                "extractors": results,
            },
            indent=2,
        )
    )


def run(extractor: object, audio: np.ndarray, config: FeatureConfig) -> None:
    """Extract features of ``audio`` in the features stage's chunks."""
    for start in range(0, len(audio), CHUNK):
        extractor.extract(audio[start : start + CHUNK], config, RATE)


if __name__ == "__main__":
    main()
