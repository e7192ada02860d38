"""A candidate recipe and the default, both scored on the default data's splits and streams (JSON).

A change to the synthetic data (more speakers, other microphones, ...) changes its validation and
test splits too, so the candidate's own test accuracy cannot tell a better model from an easier
test. This benchmark trains, with each seed, the default recipe and the candidate (the default
config updated with ``--set``, a JSON table of config sections) and scores both on the **default
data's** validation and test splits, read as a Speech Commands folder, and on its validation and
test streams: accuracy, ``_unknown_`` recall, the shares of confusables, fillers and other speech
rejected, and the test stream at the ``[recognizer]`` settings and at those tuned on the
validation stream. The candidate's own test accuracy is printed beside them.

No speaker leaks: the split of a speaker follows from its id, and the synthetic set draws each
speaker's id for its split, so a training speaker of any synthetic set is never a validation or
test speaker of another; the held-out accent follows from ``[data.synth] seed`` alone.

Usage::

    python benchmarks/bench_cross_data.py \\
        --set '{"data": {"synth": {"speakers": 256, "repeats": 5}}}'

Without ``--set`` the candidate is one clip per confusable word instead of the default three
(:data:`PREVIOUS_DEFAULT`), the comparison that made three the default.

(``--seeds 0 1`` for more seeds; about 5 minutes a recipe and seed on the 2-core reference
machine, plus the candidate data's synthesis.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kwscompress import Pipeline
from kwscompress.config import Config

PREVIOUS_DEFAULT = {"data": {"synth": {"confusable_repeats": 1}}}
"""The candidate when ``--set`` is not given."""


def scores(pipe: Pipeline, model: torch.nn.Module) -> dict[str, Any]:
    """Clip and stream figures of ``model`` on ``pipe``'s data."""
    evaluation = pipe.evaluate(model=model)
    stream = pipe.stream(model=model)
    rejection = evaluation["rejection"]
    out: dict[str, Any] = {
        "validation_accuracy": round(evaluation["accuracy"]["validation"], 4),
        "test_accuracy": round(evaluation["accuracy"]["testing"], 4),
        "unknown_recall": round(rejection["unknown_recall"], 4),
        "rejected": {
            kind: round(row["rejection_rate"], 4)
            for kind, row in rejection["words"]["by_kind"].items()
        },
    }
    for name, record in (
        ("stream_configured", stream["at_configured_threshold"]),
        ("stream_tuned", stream),
    ):
        out[name] = {
            "recognizer": record["recognizer"],
            "false_reject_rate": round(record["false_reject_rate"], 4),
            "false_accepts_per_hour": round(record["false_accepts_per_hour"], 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set", type=json.loads, default=PREVIOUS_DEFAULT, help="config overrides (JSON)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        default_data = Pipeline(Config(), run_dir=work / "default-data").load_data().root
        for seed in args.seeds:
            default = Config().updated({"train": {"seed": seed}})
            reference = default.updated(
                {"data": {"source": "speech_commands", "root": str(default_data)}}
            )
            for name, config in (("default", default), ("candidate", default.updated(args.set))):
                own = Pipeline(config, run_dir=work / f"{name}-{seed}")
                start = time.perf_counter()
                model = own.train()
                row = {"recipe": name, "seed": seed}
                row["data_and_train_seconds"] = round(time.perf_counter() - start, 1)
                if name == "candidate":  # the default's own data is the default data
                    own_accuracy = own.evaluate(model=model)["accuracy"]["testing"]
                    row["own_test_accuracy"] = round(own_accuracy, 4)
                judge = Pipeline(reference, run_dir=work / f"{name}-{seed}-on-default-data")
                rows.append(row | {"on_default_data": scores(judge, model)})
    print(json.dumps({"candidate": args.set, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
