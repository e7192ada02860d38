"""Helpers shared by the tests: small audio and speaker ids for the hash split."""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kwscompress.data.splits import which_set

SAMPLE_RATE = 16000


def speakers_for(
    split: str, count: int, validation: float = 10.0, testing: float = 10.0
) -> list[str]:
    """``count`` 8-hex speaker ids that the hash rule puts in ``split``."""
    found = []
    for n in itertools.count():
        speaker = f"{n:08x}"
        if which_set(f"{speaker}_nohash_0.wav", validation, testing) == split:
            found.append(speaker)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


def tone(freq: float, seconds: float = 1.0, level: float = 0.5, seed: int = 0) -> np.ndarray:
    """A tone burst with a little noise: a stand-in 'word' whose class the features can tell."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    envelope = np.exp(-(((t - seconds / 2) / (seconds / 6)) ** 2))
    signal = level * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


WORD_TONES = {"yes": 500.0, "no": 1500.0, "cat": 3000.0, "dog": 4500.0}


def browser_result(page: str, tmp_path: Path, marker: str) -> Any:
    """Open ``page`` (HTML text) in headless Chromium and return the JSON its script left in
    ``<pre id="marker">``; skips the test when Chromium is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(page, "utf-8")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(rf'<pre id="{marker}">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no result: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))
