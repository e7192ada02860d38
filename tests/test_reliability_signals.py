"""Issue 9, interrupts: Ctrl-C and SIGTERM stop synthesis quietly with every worker, and a parent
killed outright takes its workers along and leaves a temp folder the next run removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _foreground_signals() -> None:
    # A shell starts background jobs with SIGINT ignored, and children inherit that; the test
    # may run under one (CI), but the command it starts stands for a terminal's foreground job.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path) -> subprocess.Popen[str]:
    # Its own session: the process group stands for the terminal's foreground job.
    return subprocess.Popen(
        [sys.executable, "-m", "kwscompress.cli", "synth", "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_foreground_signals,
        env={**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"},
    )


def _wait_for_workers(process: subprocess.Popen[str], tmp: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if tmp.is_dir() and any(tmp.glob("*/*.wav")) and len(_group(process.pid)) > 1:
            return
        time.sleep(0.05)
    raise AssertionError("synthesis did not start")


def _gone(pgid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _group(pgid)


@pytest.mark.parametrize(
    ("send", "status", "message"),
    [
        (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "interrupted"),
        (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "interrupted"),
        (lambda p: os.kill(p.pid, signal.SIGTERM), 143, "terminated"),
    ],
    ids=["ctrl-c", "ctrl-c-again", "sigterm"],
)
def test_interrupt_stops_synthesis_quietly(tmp_path: Path, send, status: int, message: str) -> None:
    out = tmp_path / "ds"
    process = _start(out)
    _wait_for_workers(process, tmp_path / f".ds.tmp-{process.pid}")
    send(process)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status
    assert err == f"kwscompress: {message}; finished stages are saved\n"
    assert _gone(process.pid), "workers outlived the command"
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temp folder


def test_killed_parent_takes_workers_along_and_next_run_cleans_up(tmp_path: Path) -> None:
    first = _start(tmp_path / "a")
    stale = tmp_path / f".a.tmp-{first.pid}"
    _wait_for_workers(first, stale)
    first.kill()
    first.communicate(timeout=30)
    assert _gone(first.pid), "workers outlived their killed parent"
    assert stale.is_dir()  # nothing could clean up after SIGKILL
    second = _start(tmp_path / "b")
    _wait_for_workers(second, tmp_path / f".b.tmp-{second.pid}")
    assert not stale.exists()
    os.killpg(second.pid, signal.SIGINT)
    second.communicate(timeout=60)
    assert _gone(second.pid)
