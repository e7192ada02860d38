"""A bounded coverage-guided fuzz run of every reader of user files (benchmarks/bench_fuzz.py).

Every malformed input must end in the reader's own error for a bad file (``UnusableAudio`` for
a clip, ``ConfigError`` for a config, ``KwsError`` for a model or a board log), never another
exception. The benchmark runs far more inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fuzz.py"
sys.path.insert(0, str(BENCH.parent))
from bench_fuzz import TARGETS  # noqa: E402

RUNS = 200


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bounded_fuzz_run_finds_no_unhandled_exception(target: str) -> None:
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, str(BENCH), "--runs", str(RUNS), "--target", target],
        capture_output=True,
        text=True,
        env={**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)["targets"][target]
    assert report["tried"] == RUNS, report
    assert report["crashes"] == 0, report["examples"]
