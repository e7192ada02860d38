"""Host profiling: batch-1 inference latency of the float model, and where the time goes.

Latency is timed without the profiler (its bookkeeping would inflate short runs): each of
``runs`` forward passes is timed alone after ``warmup`` untimed ones, and the median, 10th and
90th percentiles are reported. A separate, shorter pass under :mod:`torch.profiler` gives the
self time of each operator per inference. The same is done on CUDA when a GPU is present.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from kwscompress.errors import KwsError

PROFILED_RUNS = 20
"""Forward passes recorded by torch.profiler (operator times are averaged over them)."""


def profile_model(
    model: nn.Module,
    input_shape: Iterable[int],
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time ``model`` on a random input of ``input_shape`` (batch first, batch 1 for the report).

    Returns the ``results["profile"]`` dict: CPU thread count, latency percentiles in
    milliseconds, self time and call count per operator per inference (averaged over
    ``profiled_runs`` passes), and the same on CUDA (``"cuda": None`` and ``"note": "no GPU"``
    when there is none). The model's mode and device are restored afterwards.

    :param threads: CPU threads for the measurement (default: torch's current setting); a tiny
        batch-1 model is often fastest on one thread, and on a busy machine extra threads wait
        for each other.
    """
    shape = tuple(int(n) for n in input_shape)
    if runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise KwsError(
            f"profiling needs runs >= 1, warmup >= 0 and threads >= 1, got runs={runs}, "
            f"warmup={warmup}, threads={threads}"
        )
    # Kineto (torch.profiler's backend) logs "gpuGetDeviceCount failed" as an ERROR on every
    # machine without a GPU, and "USDT ... profiler_start/stop" lines at level 5 on every use;
    # level 6 silences both. It is read when the profiler first starts, so setting it here
    # (after torch's import) works. A user's setting wins.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _profile(model, shape, runs, warmup)
    finally:
        torch.set_num_threads(previous_threads)


def _profile(model: nn.Module, shape: tuple[int, ...], runs: int, warmup: int) -> dict[str, Any]:
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    model.eval()
    try:
        cpu = _profile_on(model.cpu(), example, runs, warmup, "cpu", _no_sync)
        cuda = None
        if torch.cuda.is_available():
            cuda = _profile_on(
                model.cuda(), example.cuda(), runs, warmup, "cuda", torch.cuda.synchronize
            )
    finally:
        model.to(device)
        model.train(was_training)
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch": shape[0],
        "runs": runs,
        "warmup": warmup,
        **{key: cpu[key] for key in ("median_ms", "p10_ms", "p90_ms", "operators")},
        "profiled_runs": cpu["profiled_runs"],
        "cuda": cuda,
        "note": "" if cuda else "no GPU",
    }


def forward_times_ms(
    model: nn.Module,
    example: torch.Tensor,
    runs: int,
    warmup: int,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Milliseconds of each of ``runs`` forward passes of ``example``, each timed alone after
    ``warmup`` untimed passes (``sync`` waits for an asynchronous device, e.g. CUDA)."""
    sync = sync or _no_sync
    times_ms = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(example)
        sync()
        for _ in range(runs):
            start = time.perf_counter_ns()
            model(example)
            sync()
            times_ms.append((time.perf_counter_ns() - start) / 1e6)
    return times_ms


def _profile_on(
    model: nn.Module,
    example: torch.Tensor,
    runs: int,
    warmup: int,
    device: str,
    sync: Callable[[], None],
) -> dict[str, Any]:
    times_ms = forward_times_ms(model, example, runs, warmup, sync)
    with torch.inference_mode():
        profiled = min(runs, PROFILED_RUNS)
        activities = [ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(profiled):
                model(example)
            sync()
    deciles = statistics.quantiles(times_ms, n=10) if len(times_ms) > 1 else times_ms * 9
    return {
        "median_ms": statistics.median(times_ms),
        "p10_ms": deciles[0],
        "p90_ms": deciles[-1],
        "operators": _operators(prof.key_averages(), profiled, device),
        "profiled_runs": profiled,
    }


def _operators(events: Any, profiled: int, device: str) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        row = {
            "name": event.key,
            "self_cpu_ms": event.self_cpu_time_total / 1000 / profiled,
            "calls": round(event.count / profiled),
        }
        if device == "cuda":
            row["self_cuda_ms"] = event.self_device_time_total / 1000 / profiled
        rows.append(row)
    sort_key = "self_cuda_ms" if device == "cuda" else "self_cpu_ms"
    return sorted(rows, key=lambda row: row[sort_key], reverse=True)


def _no_sync() -> None:
    """CPU work is finished when the call returns."""
