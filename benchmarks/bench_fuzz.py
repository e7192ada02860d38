"""Coverage-guided fuzzing (atheris) of what reads user files; prints one JSON object.

Usage: ``python benchmarks/bench_fuzz.py [--runs N] [--target NAME ...] [--seed N]``.

Each target gets ``N`` inputs in a process of its own, mutated by libFuzzer from a small seed
corpus with kwscompress's own code instrumented for coverage. An input *crashes* when the code
under test raises anything but the project's own error for a bad file (``UnusableAudio`` for
audio, ``ConfigError`` for a config); the target is 0. The JSON has, per target, the inputs
tried, the crashes found (with the first few inputs as hex and the error), and the seconds.

Targets: ``wav`` (the clip reader), ``config`` (the TOML config loader), ``tflite`` (the
``.tflite`` reader behind the Arduino sketch's op resolver) and ``board_log`` (the parser of the
sketch's serial output). Adding a reader: write a ``Target`` whose ``check`` feeds bytes to it,
name the errors it may raise in ``accepted``, give a few valid files as ``seeds``, and add it to
:data:`TARGETS`; the suite's bounded run (tests/test_fuzz.py) runs every target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = 5
"""Crashing inputs kept per target in the report, one per distinct error."""


@dataclass
class Target:
    """One reader under fuzzing."""

    check: Callable[[bytes, Path], None]
    """Feed the bytes (written to the given scratch file when the reader takes a path)."""
    accepted: Callable[[], tuple[type[BaseException], ...]]
    """The errors that are a proper answer to a bad input (imported lazily)."""
    seeds: Callable[[], list[bytes]]
    """Valid inputs to start mutating from."""
    instrument: list[str] = field(default_factory=lambda: ["kwscompress"])
    """Packages whose code is instrumented for coverage."""
    max_len: int = 4096
    """Longest input in bytes (at least the largest seed, to start from whole files)."""


def _wav_check(data: bytes, scratch: Path) -> None:
    from kwscompress.data.audio import read_clip

    scratch.write_bytes(data)
    read_clip(scratch, 16000, 16000)


def _wav_accepted() -> tuple[type[BaseException], ...]:
    from kwscompress.data.audio import UnusableAudio

    return (UnusableAudio,)


def _wav_seeds() -> list[bytes]:
    import io

    import numpy as np
    import soundfile

    seeds = []
    tone = (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32)
    for subtype, rate, channels in [("PCM_16", 16000, 1), ("PCM_U8", 8000, 2), ("FLOAT", 22050, 1)]:
        buffer = io.BytesIO()
        audio = np.stack([tone] * channels, 1) if channels > 1 else tone
        soundfile.write(buffer, audio, rate, subtype=subtype, format="WAV")
        seeds.append(buffer.getvalue())
    return seeds


def _config_check(data: bytes, scratch: Path) -> None:
    from kwscompress.config import Config

    scratch.write_bytes(data)
    Config.from_toml(scratch)


def _config_accepted() -> tuple[type[BaseException], ...]:
    from kwscompress.errors import ConfigError

    return (ConfigError,)


def _config_seeds() -> list[bytes]:
    return [
        b'[run]\nname = "yes-no"\n[data]\nwanted_words = ["yes", "no"]\n',
        b"[data]\nsilence_percentage = 25.0\nunknown_percentage = 25.0\n",
        b"[data]\nclip_duration_ms = 1000\ntime_shift_ms = 100.0\n[features]\nwindow_ms = 30.0\n",
        b"[data.synth]\nspeakers = 12\nrepeats = 2\n[train]\nepochs = 3\nlearning_rate = 1e-3\n",
        b"[estimate]\nbits = [32, 8]\n[profile]\nruns = 30\n[sweep]\nworkers = 2\n",
        b'[[compress.recipes]]\nname = "ptq"\nsteps = [{kind = "quantize", method = "ptq"}]\n',
        b"[recognizer]\ndetection_threshold = 200\nsuppression_ms = 1500\n",
    ]


def _kws_error() -> tuple[type[BaseException], ...]:
    from kwscompress.errors import KwsError

    return (KwsError,)


def _tflite_check(data: bytes, scratch: Path) -> None:
    from kwscompress_arduino.model_info import read_model

    scratch.write_bytes(data)
    read_model(scratch)


def _tflite_seeds() -> list[bytes]:
    model = Path(__file__).parents[1] / "tests" / "data" / "micro_speech_quantized.tflite"
    return [model.read_bytes()]


def _board_log_check(data: bytes, scratch: Path) -> None:
    from kwscompress.board_log import profile_table, read_log_file

    scratch.write_bytes(data)
    profile_table(read_log_file(scratch).blocks)


def _board_log_seeds() -> list[bytes]:
    block = (
        b"PROFILE preprocess_ms min=1.250 max=1.400 avg=1.300 n=40\r\n"
        b"PROFILE inference_ms min=10.100 max=10.900 avg=10.400 n=40\r\n"
        b"PROFILE postprocess_ms min=0.010 max=0.030 avg=0.020 n=40\r\n"
    )
    return [
        b"ARENA used_bytes=7340 size_bytes=10240\r\n" + block + b"Heard yes (212) @4120ms\r\n",
        b"boot noise\xff\xfe\n" + block + block,
        b"ERROR AllocateTensors() failed\n",
    ]


TARGETS: dict[str, Target] = {
    "wav": Target(_wav_check, _wav_accepted, _wav_seeds),
    "config": Target(_config_check, _config_accepted, _config_seeds),
    "tflite": Target(
        _tflite_check,
        _kws_error,
        _tflite_seeds,
        instrument=["kwscompress", "kwscompress_arduino"],
        max_len=32768,
    ),
    "board_log": Target(_board_log_check, _kws_error, _board_log_seeds),
}
"""Every fuzz target by name."""


def fuzz_one(name: str, runs: int, seed: int, max_len: int | None) -> None:
    """Fuzz one target in this process (it never returns: libFuzzer owns the process)."""
    import atheris

    target = TARGETS[name]
    with atheris.instrument_imports(include=target.instrument):
        accepted = target.accepted()
        target.check(target.seeds()[0], Path(tempfile.mkdtemp()) / "warmup")
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for index, data in enumerate(target.seeds()):
        (corpus / f"seed{index}").write_bytes(data)
    scratch = Path(tempfile.mkdtemp()) / "input"
    state = {"tried": 0, "crashes": 0, "examples": [], "started": time.perf_counter()}

    def one_input(data: bytes) -> None:
        state["tried"] += 1
        try:
            target.check(data, scratch)
        except accepted:
            pass
        except Exception as exc:  # the finding: anything but the project's own error
            state["crashes"] += 1
            error = f"{type(exc).__name__}: {exc}"[:300]
            seen = {example["error"] for example in state["examples"]}
            if len(state["examples"]) < EXAMPLES and error not in seen:
                state["examples"].append({"input": data[:256].hex(), "error": error})
        if state["tried"] >= runs:
            seconds = round(time.perf_counter() - state["started"], 3)
            report = {k: state[k] for k in ("tried", "crashes", "examples")}
            print(json.dumps({**report, "seconds": seconds}), flush=True)
            os._exit(0)

    # libFuzzer would stop on its own after -runs, but by exiting the C way; counting here
    # lets the report be printed. Its -runs is only a backstop.
    argv = [
        sys.argv[0],
        str(corpus),
        f"-runs={runs * 10}",
        f"-seed={seed}",
        f"-max_len={max_len or target.max_len}",
        "-timeout=20",
        "-rss_limit_mb=4096",
        "-print_final_stats=0",
        f"-artifact_prefix={tempfile.mkdtemp(prefix=f'fuzz-{name}-crash-')}/",
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_targets(names: list[str], runs: int, seed: int, max_len: int | None) -> dict:
    """Fuzz each target in a child process; a child killed by libFuzzer counts as a crash."""
    results = {}
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--runs", str(runs)]
        command += ["--seed", str(seed)] + (["--max-len", str(max_len)] if max_len else [])
        started = time.perf_counter()
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode == 0 and lines:
            results[name] = json.loads(lines[-1])
        else:  # libFuzzer stopped it: out of memory, a timeout, or a crash below Python
            results[name] = {
                "tried": None,
                "crashes": 1,
                "examples": [{"error": child.stderr[-2000:]}],
                "seconds": round(time.perf_counter() - started, 3),
            }
    return {
        "runs_per_target": runs,
        "seed": seed,
        "targets": results,
        "crashes": sum(r["crashes"] for r in results.values()),
    }


def main() -> None:
    """Parse arguments, fuzz, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="inputs per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, help="longest input in bytes (default: per target)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fuzz_one(args.child, args.runs, args.seed, args.max_len)
    report = run_targets(args.target or sorted(TARGETS), args.runs, args.seed, args.max_len)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
