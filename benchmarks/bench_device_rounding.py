"""What computing TFLM's rounding costs a quantized model's eval pass, and that it is exact (JSON).

A ``tc_ds_cnn`` with random weights (batch norms with random statistics, so every layer has a
bias) is quantized by the ``ptq`` quantizer at 8 bits, ``w4a8`` and 4 bits, calibrated on random
micro-like features. For each, the eval pass over ``--clips`` random clips on one thread is timed
with the device rounding (the default) and with Brevitas' own (``device_rounding = False``), and
both are compared with the integer graph that the export runs in TFLM (the logits, bit for bit).

Usage: ``python benchmarks/bench_device_rounding.py [--clips 810] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from kwscompress.compress.context import StepContext
from kwscompress.config import TrainConfig
from kwscompress.intgraph_reference import quantize_input, trace_int_graph
from kwscompress.models import DsCnn, TcDsCnnSpec
from kwscompress.train import LabeledFeatures
from kwscompress_brevitas import PtqQuantizer

SHAPE = (49, 40)
LABELS = ["_silence_", "_unknown_", "yes", "no"]


def _model() -> DsCnn:
    torch.manual_seed(0)
    model = TcDsCnnSpec().build(SHAPE, len(LABELS))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _timed(
    model: torch.nn.Module, features: torch.Tensor, repeats: int
) -> tuple[float, np.ndarray]:
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            logits = model(features)
            times.append(time.perf_counter() - started)
    return statistics.median(times), logits.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=810)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 26, (args.clips, *SHAPE)).astype(np.float32)
    calibration = LabeledFeatures(features[:200], rng.integers(0, len(LABELS), 200))
    context = StepContext(
        train=calibration, validation=calibration, labels=LABELS,
        train_config=TrainConfig(), finetune_learning_rate=1e-4, seed=0,
    )  # fmt: skip
    quantizer, model = PtqQuantizer(), _model()
    results = {}
    for bits in (8, "w4a8", 4):
        settings = quantizer.settings({"bits": bits, "calibration_batches": 2})
        qmodel = quantizer.quantize(model, context, **settings).model.eval()
        graph = qmodel.int_graph()
        scale = graph.layers[-2].output.scale
        graph_logits = trace_int_graph(graph, quantize_input(graph, features))[-2].astype(int)
        row = {}
        for name, device in (("device_rounding", True), ("brevitas_rounding", False)):
            qmodel.device_rounding = device
            seconds, logits = _timed(qmodel, torch.from_numpy(features), args.repeats)
            codes = np.round(logits / scale).astype(int)
            row[name] = {
                "eval_seconds": round(seconds, 4),
                "logits_equal_to_int_graph": float((codes == graph_logits).mean()),
                "top1_equal_to_int_graph": float(
                    (codes.argmax(1) == graph_logits.argmax(1)).mean()
                ),
            }
        row["cost"] = round(
            row["device_rounding"]["eval_seconds"] / row["brevitas_rounding"]["eval_seconds"], 2
        )
        results[str(bits)] = row
    print(json.dumps({"clips": args.clips, "threads": 1, "variants": results}, indent=2))


if __name__ == "__main__":
    main()
