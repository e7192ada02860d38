"""The smallest TFLM tensor arena that runs a model, found by bisection in a child process.

An arena that is too small normally makes TFLM fail ``AllocateTensors`` with an error, but it
can also take the whole process down, so the probes run in a child process (this file, run as
a script: it imports only numpy and tflite_micro). The child prints ``probe N`` before trying an
arena of ``N`` bytes and ``ok N`` or ``fail N`` after; when the child dies during a probe, that
size counts as failing and a new child carries on with the narrowed range.

A size *works* when the interpreter is created and an invoke on each sample input gives exactly
the outputs of a run with a generous arena. Sizes are multiples of 16, TFLM's arena alignment
(the firmware declares the arena ``alignas(16)``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STEP = 16
"""Granularity of the search in bytes (TFLM aligns arena allocations to 16 bytes)."""

MAX_RESTARTS = 32
"""Children that may die before the search gives up (each death removes one size)."""


def smallest_arena(
    model: bytes, inputs: np.ndarray, expected: np.ndarray, upper: int
) -> dict[str, int]:
    """Bisect for the smallest arena (a multiple of :data:`STEP`) that reproduces ``expected``.

    :param inputs: a few int8 model inputs, one per row.
    :param expected: the outputs TFLM gives for them with a generous arena.
    :param upper: an arena size known to work.
    :returns: ``arena_bytes`` (the smallest working size), ``probes`` and ``crashes`` (probes
        that killed the child process).
    """
    low, high = 0, -(-upper // STEP) * STEP  # low fails (or is 0), high works
    probes = crashes = 0
    with tempfile.TemporaryDirectory(prefix="kws-arena-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(model)
        np.save(folder / "inputs.npy", np.asarray(inputs, np.int8))
        np.save(folder / "expected.npy", np.asarray(expected))
        while high - low > STEP:
            if crashes > MAX_RESTARTS:
                raise RuntimeError(f"the arena probe crashed {crashes} times; giving up")
            child = subprocess.run(
                [sys.executable, __file__, str(folder), str(low), str(high)],
                capture_output=True,
                text=True,
                check=False,
            )
            pending = None
            for line in child.stdout.splitlines():
                word, _, number = line.partition(" ")
                if word == "probe":
                    pending = int(number)
                    probes += 1
                elif word == "ok":
                    high, pending = int(number), None
                elif word == "fail":
                    low, pending = int(number), None
            if pending is not None:  # the child died while trying this size
                low, crashes = pending, crashes + 1
            elif child.returncode != 0:
                raise RuntimeError(f"the arena probe failed: {child.stderr.strip()[-500:]}")
    return {"arena_bytes": high, "probes": probes, "crashes": crashes}


def _works(model: bytes, arena: int, inputs: np.ndarray, expected: np.ndarray) -> bool:
    from tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
        for clip, want in zip(inputs, expected, strict=True):
            interpreter.set_input(clip[np.newaxis], 0)
            interpreter.invoke()
            if not np.array_equal(interpreter.get_output(0)[0], want):
                return False
    except RuntimeError:
        return False
    return True


def _bisect(folder: Path, low: int, high: int) -> None:
    model = (folder / "model.tflite").read_bytes()
    inputs = np.load(folder / "inputs.npy")
    expected = np.load(folder / "expected.npy")
    while high - low > STEP:
        middle = (low + high) // 2 // STEP * STEP
        print(f"probe {middle}", flush=True)
        works = _works(model, middle, inputs, expected)
        print(f"{'ok' if works else 'fail'} {middle}", flush=True)
        low, high = (low, middle) if works else (middle, high)


if __name__ == "__main__":
    _bisect(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
