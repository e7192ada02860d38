"""Seconds per training epoch of each built-in model, printed as JSON.

Random 49 x 40 features stand in for real ones: the cost of an epoch depends on the shapes, not
the values. An epoch here is one pass over ``--clips`` training clips plus the scoring of a
validation set a tenth that size, exactly what :func:`kwscompress.train.train_model` does,
with the default word head over ``--words`` words (the default data's 58; 0: without it).

Usage: ``python benchmarks/bench_train.py [--clips 3000] [--epochs 2] [--words 58]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from kwscompress.config import TrainConfig
from kwscompress.plugins import get_plugin_manager
from kwscompress.train import LabeledFeatures, set_seed, train_model

SHAPE = (49, 40)
CLASSES = 4


def _random_set(clips: int, rng: np.random.Generator, words: int = 0) -> LabeledFeatures:
    features = rng.normal(size=(clips, *SHAPE)).astype(np.float32)
    said = rng.integers(words, size=clips) if words else None
    return LabeledFeatures(features, rng.integers(CLASSES, size=clips), said)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000, help="training clips per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per model")
    parser.add_argument("--models", nargs="*", default=["tiny_conv", "tc_ds_cnn", "ds_cnn"])
    parser.add_argument("--words", type=int, default=58, help="word head classes (0: none)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    train = _random_set(args.clips, rng, args.words)
    validation = _random_set(args.clips // 10, rng)
    config = TrainConfig(epochs=args.epochs)
    pm = get_plugin_manager()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            set_seed(config.seed)
            model = pm.component("model", name).build(SHAPE, CLASSES)
            result = train_model(model, train, validation, config, Path(folder) / f"{name}.pt")
            results[name] = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "seconds_per_epoch": round(result.seconds_per_epoch, 3),
                "epoch_seconds": [round(h["seconds"], 3) for h in result.history],
                "device": result.device,
                "word_classes": result.word_classes,
            }
    print(
        json.dumps(
            {
                "benchmark": "train_epoch",
                "training_clips": args.clips,
                "validation_clips": args.clips // 10,
                "batch_size": config.batch_size,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "models": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
