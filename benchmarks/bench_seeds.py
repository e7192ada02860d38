"""Clip accuracy and the test stream of one recipe over several training seeds, as JSON.

Runs of the same recipe differ by one or two points of test accuracy with the training seed
alone (weight initialisation, batch order, augmented copies, warp factors), which is as much as
most single changes to the recipe move it. Compare recipes on the mean and the spread of a few
seeds, on validation first, not on one run's test split. The features come from the cache (the
first run of a config computes them); training, evaluation and, unless ``[stream] enabled`` is
false, the stream stage (recognizer tuned on the validation stream, scored on the test stream)
repeat per seed. ``rejected`` is the share of the test speakers' confusables, fillers and other
speech each seed's model rejects (``rejection.words.by_kind`` of the evaluate stage).

The ``ensemble`` record scores the average of the seeds' softmax outputs on each split: how
much of the gap to a target is the variance between training runs (an average of runs beats
any one of them by what the runs disagree on) rather than what the model and the features can
tell apart. ``--filters`` trains a ``tc_ds_cnn`` or ``ds_cnn`` of another width.

Usage: ``python benchmarks/bench_seeds.py [--config recipe.toml] [--seeds 0 1 2] [--filters N]``
(about 70 s per seed for the default config on the 2-core reference machine, plus the dataset
and features on a cold cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kwscompress import Pipeline
from kwscompress.config import Config
from kwscompress.rejection import word_table
from kwscompress.train import predict, set_seed, train_model

SPLITS = ("validation", "testing")


def _train_one(
    pipe: Pipeline, sets: Any, seed: int, folder: Path, width: dict[str, int]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One seed's row, and its softmax outputs on each split for the ensemble."""
    config = pipe.config
    set_seed(seed)
    spec = pipe.pm.component("model", config.model.name)
    model = spec.build(sets.shape, len(sets.labels), **width)
    started = time.perf_counter()
    result = train_model(
        model,
        sets.splits["training"],
        sets.splits["validation"],
        dataclasses.replace(config.train, seed=seed),
        folder / f"seed{seed}.pt",
    )
    row: dict[str, Any] = {
        "seed": seed,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }
    scores = {split: predict(model, sets.splits[split].features) for split in SPLITS}
    row.update({split: _recalls(sets, split, scores[split]) for split in SPLITS})
    probes = pipe.rejection_probes(sets)
    if probes.words is not None:
        kinds = word_table(model, probes.words, sets.labels)["by_kind"]
        row["rejected"] = {kind: round(k["rejection_rate"], 4) for kind, k in kinds.items()}
    if config.stream.enabled:
        stream = pipe.stream(model, sets)
        row["stream"] = {
            "recognizer": stream["recognizer"],
            "false_reject_rate": round(stream["false_reject_rate"], 4),
            "false_accepts_per_hour": round(stream["false_accepts_per_hour"], 2),
            "lowest_threshold_false_reject_rate": round(
                stream["streams"]["testing"]["det"][0]["false_reject_rate"], 4
            ),
        }
    return row, scores


def _recalls(sets: Any, split: str, scores: np.ndarray) -> dict[str, float]:
    """Recall of each class present in ``split`` and the accuracy, from softmax ``scores``."""
    labels = sets.splits[split].labels
    predicted = scores.argmax(axis=1)
    per_class = {
        name: round(float((predicted[labels == i] == i).mean()), 4)
        for i, name in enumerate(sets.labels)
        if (labels == i).any()
    }
    return per_class | {"total": round(float((predicted == labels).mean()), 4)}


def _ensemble(sets: Any, scores: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Recall per class and accuracy of the seeds' mean softmax on each split."""
    return {
        split: _recalls(sets, split, np.mean([s[split] for s in scores], axis=0))
        for split in SPLITS
    }


def _spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for part in (*SPLITS, "rejected", "stream"):
        if part not in rows[0]:
            continue
        names = [k for k, v in rows[0][part].items() if isinstance(v, float | int)]
        summary[part] = {}
        for name in names:
            values = [row[part][name] for row in rows]
            summary[part][name] = {
                "mean": round(statistics.fmean(values), 4),
                "min": min(values),
                "max": max(values),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML config of the recipe (default: defaults)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--filters", type=int, help="width of a tc_ds_cnn or ds_cnn")
    args = parser.parse_args()
    width = {} if args.filters is None else {"filters": args.filters}

    config = Config.from_toml(args.config) if args.config else Config()
    if width and config.model.name not in ("tc_ds_cnn", "ds_cnn"):
        parser.error(f"--filters needs model tc_ds_cnn or ds_cnn, not {config.model.name}")
    with tempfile.TemporaryDirectory() as folder:
        pipe = Pipeline(config, run_dir=Path(folder) / "run")
        sets = pipe.features(pipe.load_data())
        runs = [_train_one(pipe, sets, seed, Path(folder), width) for seed in args.seeds]
    rows = [row for row, _ in runs]
    print(
        json.dumps(
            {
                "benchmark": "seeds",
                "config": str(args.config) if args.config else "defaults",
                "model": config.model.name,
                "filters": args.filters,
                "epochs": config.train.epochs,
                "seeds": rows,
                "summary": _spread(rows),
                "ensemble": _ensemble(sets, [scores for _, scores in runs]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
