"""Reading what the Arduino sketch prints: timing profiles and recognitions, from serial or a log.

The sketch (``firmware_templates/``) prints fixed lines (formats in ``serial_lines.h``)::

    ARENA used_bytes=<n> size_bytes=<n>
    Heard <label> (<score>) @<time>ms
    PROFILE preprocess_ms min=<ms> max=<ms> avg=<ms> n=<count>
    PROFILE inference_ms min=<ms> max=<ms> avg=<ms> n=<count>
    PROFILE postprocess_ms min=<ms> max=<ms> avg=<ms> n=<count>

The three PROFILE lines form a **block**: one per stage, in that order, with the same count.
Anything else (boot noise, a line cut by a reset, bytes that are not UTF-8, a stage line out of
order, figures with the average outside min..max) is skipped; a block counts only when all
three of its lines arrived intact. The **profile table** (the reference report's Table 3)
combines every complete block: the smallest minimum, the largest maximum, and the average
weighted by each block's count.

:func:`store_board_profile` records the table on a variant's row of a run's ``results.json``
(``deploy.board_latency_ms`` = the average inference time, ``deploy.board_profile`` = the table),
atomically and only from a complete table; a serial port that disconnects part way raises
:class:`~kwscompress.errors.KwsError` and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwscompress.errors import KwsError
from kwscompress.run import write_json

STAGES = ("preprocess", "inference", "postprocess")
"""Profiled stages in the order the sketch prints them."""
STAGE_TITLES = {
    "preprocess": "preprocessing",
    "inference": "inference",
    "postprocess": "post-processing",
}

_NUMBER = r"(\d+(?:\.\d+)?)"
PROFILE_LINE = re.compile(
    rf"^PROFILE ({'|'.join(STAGES)})_ms min={_NUMBER} max={_NUMBER} avg={_NUMBER} n=(\d+)$"
)
HEARD_LINE = re.compile(r"^Heard (.+) \((\d+)\) @(-?\d+)ms$")
ARENA_LINE = re.compile(r"^ARENA used_bytes=(\d+) size_bytes=(\d+)$")

DEFAULT_BAUD = 115200
DEFAULT_TIMEOUT_S = 120.0
"""How long :func:`read_serial` waits for its blocks when no duration is given."""


@dataclass(frozen=True)
class StageStats:
    """One stage of one PROFILE block (or of the combined table)."""

    min_ms: float
    max_ms: float
    avg_ms: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready."""
        return {"min_ms": self.min_ms, "max_ms": self.max_ms, "avg_ms": self.avg_ms, "n": self.n}


@dataclass
class BoardLog:
    """Everything recognised in the sketch's output."""

    blocks: list[dict[str, StageStats]] = field(default_factory=list)
    """Complete PROFILE blocks, in order."""
    recognitions: list[tuple[int, str, int]] = field(default_factory=list)
    """``(time_ms, label, score)`` of each ``Heard`` line."""
    arena_used_bytes: int | None = None
    arena_size_bytes: int | None = None
    errors: list[str] = field(default_factory=list)
    """The text of ``ERROR`` lines (setup failures)."""
    lines: int = 0
    skipped: int = 0
    """Lines that matched no format, or stage lines that did not complete a block."""
    _pending: dict[str, StageStats] = field(default_factory=dict, repr=False)

    def feed(self, raw: str | bytes) -> None:
        """Take one line of output (with or without its line ending)."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = text.strip()
        if not line:
            return
        self.lines += 1
        if (match := PROFILE_LINE.match(line)) and _consistent(match):
            self._stage(match)
        elif match := HEARD_LINE.match(line):
            self.recognitions.append((int(match[3]), match[1], int(match[2])))
        elif match := ARENA_LINE.match(line):
            self.arena_used_bytes, self.arena_size_bytes = int(match[1]), int(match[2])
        elif line.startswith("ERROR "):
            self.errors.append(line[len("ERROR ") :])
        else:
            self.skipped += 1

    def feed_all(self, lines: Iterable[str | bytes]) -> BoardLog:
        """Feed every line; returns self."""
        for line in lines:
            self.feed(line)
        return self

    @property
    def partial_block(self) -> bool:
        """Whether the output ended inside a PROFILE block."""
        return bool(self._pending)

    def _stage(self, match: re.Match[str]) -> None:
        stage = match[1]
        stats = StageStats(float(match[2]), float(match[3]), float(match[4]), int(match[5]))
        expected = STAGES[len(self._pending)]
        if stage != expected:
            # Out of order: the block in progress lost a line. Drop it; this line may start
            # the next one.
            self.skipped += len(self._pending)
            self._pending = {}
            if stage != STAGES[0]:
                self.skipped += 1
                return
        if self._pending and stats.n != next(iter(self._pending.values())).n:
            self.skipped += len(self._pending) + 1
            self._pending = {}
            return
        self._pending[stage] = stats
        if len(self._pending) == len(STAGES):
            self.blocks.append(self._pending)
            self._pending = {}


def _consistent(match: re.Match[str]) -> bool:
    # The sketch's figures always satisfy min <= avg <= max; a line that does not was garbled.
    low, high, mean = float(match[2]), float(match[3]), float(match[4])
    return low <= mean <= high


def profile_table(blocks: list[dict[str, StageStats]]) -> dict[str, Any]:
    """The combined min/max/avg per stage of complete blocks (the report's Table 3).

    :returns: ``{"preprocess": {...}, "inference": {...}, "postprocess": {...}, "blocks": k}``,
        each stage ``{"min_ms", "max_ms", "avg_ms", "n"}`` (``avg_ms`` weighted by ``n``,
        rounded to the microsecond like the sketch's figures).
    :raises KwsError: no complete block.
    """
    if not blocks:
        raise KwsError("no complete PROFILE block (preprocess, inference and postprocess lines)")
    table: dict[str, Any] = {}
    for stage in STAGES:
        rows = [block[stage] for block in blocks]
        n = sum(r.n for r in rows)
        avg = sum(r.avg_ms * r.n for r in rows) / n if n else 0.0
        table[stage] = StageStats(
            min(r.min_ms for r in rows), max(r.max_ms for r in rows), round(avg, 3), n
        ).as_dict()
    table["blocks"] = len(blocks)
    return table


def read_log_file(path: str | Path) -> BoardLog:
    """Parse a saved serial log (for example from ``arduino-cli monitor``).

    :raises KwsError: the file cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KwsError(f"cannot read the board log {path}: {exc.strerror}") from exc
    return BoardLog().feed_all(data.splitlines())


def read_serial(
    port: str,
    baud: int = DEFAULT_BAUD,
    seconds: float | None = None,
    blocks: int = 1,
    read_timeout: float = 0.5,
) -> BoardLog:
    """Read the sketch's output from a serial port.

    Without ``seconds`` it stops after ``blocks`` complete PROFILE blocks (giving up after
    :data:`DEFAULT_TIMEOUT_S`); with ``seconds`` it reads for that long.

    :raises KwsError: the port cannot be opened; it disconnected before the reading was done
        (whatever was read is discarded); or no complete block arrived in time.
    """
    import serial

    try:
        connection = serial.Serial(port, baud, timeout=read_timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise KwsError(f"cannot open serial port {port}: {exc}") from exc
    log = BoardLog()
    limit = seconds if seconds is not None else DEFAULT_TIMEOUT_S
    deadline = time.monotonic() + limit
    try:
        with connection:
            while time.monotonic() < deadline:
                if seconds is None and len(log.blocks) >= blocks:
                    break
                try:
                    line = connection.readline()
                except (serial.SerialException, OSError) as exc:
                    raise KwsError(
                        f"serial port {port} disconnected after {log.lines} lines "
                        f"({len(log.blocks)} complete PROFILE block(s)"
                        f"{', one cut short' if log.partial_block else ''}); nothing was "
                        f"recorded, reconnect the board and read again ({exc})"
                    ) from exc
                if line:
                    log.feed(line)
    except (serial.SerialException, OSError) as exc:  # closing a vanished port can fail too
        raise KwsError(f"serial port {port} failed: {exc}") from exc
    if not log.blocks:
        hint = f"; the board reported: {'; '.join(log.errors)}" if log.errors else ""
        raise KwsError(
            f"no complete PROFILE block from {port} in {limit:g} s ({log.lines} lines read); is "
            f"KWS_PROFILE set to 1 in the sketch and the baud rate {baud}?{hint}"
        )
    return log


def store_board_profile(
    run_dir: str | Path,
    variant_id: str,
    table: dict[str, Any],
    source: str,
    log: BoardLog | None = None,
) -> Path:
    """Record a profile table on a variant's row of ``run_dir/results.json``.

    Sets ``deploy.board_latency_ms`` (the average inference time) and ``deploy.board_profile``
    (the table, its ``source``, and the arena the board reported if ``log`` saw it), then writes
    the file atomically.

    :raises KwsError: no ``results.json``, no such variant, or an incomplete table.
    """
    missing = [s for s in STAGES if s not in table]
    if missing:
        raise KwsError(f"the profile table lacks {', '.join(missing)}; nothing was recorded")
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise KwsError(
            f"cannot read {path}: {exc.strerror}; is {run_dir} a run directory?"
        ) from exc
    rows = results.get("variants") or []
    row = next((r for r in rows if r.get("id") == variant_id), None)
    if row is None:
        ids = ", ".join(str(r.get("id")) for r in rows) or "none"
        raise KwsError(f"variant {variant_id!r} is not in {path}; variants: {ids}")
    profile = {**table, "source": source}
    if log is not None and log.arena_used_bytes is not None:
        profile["arena_used_bytes"] = log.arena_used_bytes
        profile["arena_size_bytes"] = log.arena_size_bytes
    deploy = row.setdefault("deploy", {})
    deploy["board_latency_ms"] = table["inference"]["avg_ms"]
    deploy["board_profile"] = profile
    write_json(path, results)
    return path


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``board-profile`` options to ``parser`` and make :func:`profile_command` its
    handler."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--port", help="serial port of the board (e.g. /dev/ttyACM0, COM3)")
    source.add_argument("--log", help="a saved serial log of the sketch instead of a port")
    parser.add_argument(
        "--baud", type=int, default=DEFAULT_BAUD, help="serial speed (default: 115200)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="read the port this long (default: until one complete PROFILE block)",
    )
    parser.add_argument("--run", help="run directory whose results.json gets the profile")
    parser.add_argument("--variant", help="variant id of the flashed sketch (with --run)")
    parser.set_defaults(handler=profile_command)


def profile_command(args: argparse.Namespace) -> int:
    """``kwscompress board-profile``: read the sketch's PROFILE lines, print the table, and
    record it on a run's variant when ``--run`` and ``--variant`` are given."""
    if bool(args.run) != bool(args.variant):
        raise KwsError("--run and --variant go together: the run directory and the variant id")
    if args.seconds is not None and args.seconds <= 0:
        raise KwsError(f"--seconds must be positive, got {args.seconds}")
    if args.log:
        log = read_log_file(args.log)
        source = f"log {args.log}"
    else:
        log = read_serial(args.port, args.baud, args.seconds)
        source = f"serial {args.port}"
    table = profile_table(log.blocks)
    _print_table(table, log, source)
    if args.run:
        path = store_board_profile(args.run, args.variant, table, source, log)
        print(f"recorded on variant {args.variant} in {path}")
    return 0


def _print_table(table: dict[str, Any], log: BoardLog, source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table("stage", "min ms", "max ms", "avg ms", "n", title=f"Board profile ({source})")
    for stage in STAGES:
        row = table[stage]
        out.add_row(
            STAGE_TITLES[stage], f"{row['min_ms']:.3f}", f"{row['max_ms']:.3f}",
            f"{row['avg_ms']:.3f}", str(row["n"]),
        )  # fmt: skip
    console = Console()
    console.print(out)
    console.print(
        f"{table['blocks']} PROFILE block(s), {len(log.recognitions)} recognition(s), "
        f"{log.skipped} line(s) skipped"
        + (
            f", arena used {log.arena_used_bytes} of {log.arena_size_bytes} B"
            if log.arena_used_bytes is not None
            else ""
        )
    )
