"""Reading the sketch's serial output: log files, a pseudo-terminal, disconnects, results.json."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import tty
from pathlib import Path

import pytest

from kwscompress.board_log import (
    BoardLog,
    add_profile_arguments,
    profile_table,
    read_log_file,
    read_serial,
    store_board_profile,
)
from kwscompress.errors import KwsError

# What the sketch prints at 115200 baud (Serial.println ends lines with \r\n), with boot noise,
# a line cut by a reset, a warning, and a block cut short at the end.
BOOT = [
    b"\x00\xff\xfe\x13garbage from the USB CDC reset",
    b"ARENA used_bytes=8704 size_bytes=11264",
    b"KWS ready",
    b"Heard yes (231) @2040ms",
]
BLOCK_1 = [
    b"PROFILE preprocess_ms min=3.102 max=9.877 avg=4.250 n=100",
    b"PROFILE inference_ms min=88.010 max=88.412 avg=88.200 n=100",
    b"PROFILE postprocess_ms min=0.011 max=1.215 avg=0.050 n=100",
]
MIDDLE = [b"Heard no (240) @9120ms", b"WARNING audio overrun: the spectrogram restarts", b"PROFIL"]
BLOCK_2 = [
    b"PROFILE preprocess_ms min=3.050 max=10.200 avg=4.350 n=100",
    b"PROFILE inference_ms min=88.000 max=90.100 avg=88.300 n=100",
    b"PROFILE postprocess_ms min=0.010 max=1.300 avg=0.070 n=100",
]
CUT = [b"PROFILE preprocess_ms min=3.000 max=4.000 avg=3.500 n=100", b"PROFILE inference_ms min=8"]
OUTPUT = BOOT + BLOCK_1 + MIDDLE + BLOCK_2 + CUT

# Worked out by hand from BLOCK_1 and BLOCK_2 (equal counts, so the average is the mean).
TABLE = {
    "preprocess": {"min_ms": 3.05, "max_ms": 10.2, "avg_ms": 4.3, "n": 200},
    "inference": {"min_ms": 88.0, "max_ms": 90.1, "avg_ms": 88.25, "n": 200},
    "postprocess": {"min_ms": 0.01, "max_ms": 1.3, "avg_ms": 0.06, "n": 200},
    "blocks": 2,
}


def crlf(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    results = {
        "schema": 1,
        "variants": [
            {"id": "float", "recipe": "float", "steps": []},
            {
                "id": "qat-8b",
                "recipe": "qat",
                "deploy": {"tflite_bytes": 18800, "arena_bytes": 9000},
            },
        ],
    }
    (run / "results.json").write_text(json.dumps(results, indent=2))
    return run


def command_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_profile_arguments(parser)
    return parser.parse_args(argv)


def test_a_log_file_gives_the_table_despite_garbage(tmp_path: Path) -> None:
    path = tmp_path / "board.log"
    path.write_bytes(crlf(OUTPUT))
    log = read_log_file(path)
    assert profile_table(log.blocks) == TABLE
    assert log.recognitions == [(2040, "yes", 231), (9120, "no", 240)]
    assert (log.arena_used_bytes, log.arena_size_bytes) == (8704, 11264)
    assert log.partial_block


def test_blocks_with_lost_or_mismatched_lines_do_not_count() -> None:
    pre, inf, post = BLOCK_1
    log = BoardLog().feed_all(
        [
            pre, post,  # inference lost
            inf, post,  # preprocess lost
            pre, inf.replace(b"n=100", b"n=99"), post,  # counts disagree
            pre, b"PROFILE inference_ms min=88.010 max=oops avg=88.200 n=100", post,  # corrupt
            pre, inf.replace(b"avg=88.200", b"avg=86.000"), post,  # avg below min: garbled
            b"Heard yes (999 @12ms",  # cut
            pre, b"line noise between the lines of a block", inf, post,  # noise is fine
        ]
    )  # fmt: skip
    assert len(log.blocks) == 1
    assert log.recognitions == []


def test_the_average_is_weighted_by_each_blocks_count() -> None:
    log = BoardLog().feed_all(
        [
            "PROFILE preprocess_ms min=1.000 max=2.000 avg=1.000 n=10",
            "PROFILE inference_ms min=10.000 max=12.000 avg=11.000 n=10",
            "PROFILE postprocess_ms min=0.100 max=0.300 avg=0.200 n=10",
            "PROFILE preprocess_ms min=0.500 max=3.000 avg=2.000 n=30",
            "PROFILE inference_ms min=9.000 max=11.000 avg=10.000 n=30",
            "PROFILE postprocess_ms min=0.100 max=0.200 avg=0.100 n=30",
        ]
    )
    table = profile_table(log.blocks)
    # (1 * 10 + 2 * 30) / 40 = 1.75; (11 * 10 + 10 * 30) / 40 = 10.25; (2 + 3) / 40 = 0.125
    assert table["preprocess"] == {"min_ms": 0.5, "max_ms": 3.0, "avg_ms": 1.75, "n": 40}
    assert table["inference"]["avg_ms"] == 10.25
    assert table["postprocess"]["avg_ms"] == 0.125


def test_the_command_records_the_log_on_the_variant(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path)
    path = tmp_path / "board.log"
    path.write_bytes(crlf(OUTPUT))
    args = command_args("--log", str(path), "--run", str(run), "--variant", "qat-8b")
    assert args.handler(args) == 0
    row = json.loads((run / "results.json").read_text())["variants"][1]
    assert row["deploy"]["board_latency_ms"] == 88.25
    assert row["deploy"]["tflite_bytes"] == 18800  # the rest of the row is kept
    profile = row["deploy"]["board_profile"]
    assert {k: profile[k] for k in TABLE} == TABLE
    assert profile["arena_used_bytes"] == 8704
    shown = capsys.readouterr().out
    assert "post-processing" in shown and "88.250" in shown


def test_command_errors_name_the_problem(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = tmp_path / "board.log"
    path.write_bytes(crlf(OUTPUT))
    before = (run / "results.json").read_bytes()
    with pytest.raises(KwsError, match=r"variant 'qat-4b' is not in .*variants: float, qat-8b"):
        args = command_args("--log", str(path), "--run", str(run), "--variant", "qat-4b")
        args.handler(args)
    with pytest.raises(KwsError, match="--run and --variant go together"):
        args = command_args("--log", str(path), "--run", str(run))
        args.handler(args)
    only_boot = tmp_path / "boot.log"
    only_boot.write_bytes(crlf(BOOT + BLOCK_1[:2]))
    with pytest.raises(KwsError, match="no complete PROFILE block"):
        args = command_args("--log", str(only_boot), "--run", str(run), "--variant", "qat-8b")
        args.handler(args)
    with pytest.raises(KwsError, match="cannot read the board log"):
        read_log_file(tmp_path / "missing.log")
    with pytest.raises(KwsError, match="lacks inference"):
        store_board_profile(run, "qat-8b", {"preprocess": TABLE["preprocess"]}, "test")
    assert (run / "results.json").read_bytes() == before


class FakeBoard:
    """The master side of a pseudo-terminal, writing the sketch's output line by line."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # as pyserial will set it, so nothing is translated or echoed
        self.port = os.ttyname(self.slave)
        self.thread: threading.Thread | None = None

    def play(self, lines: list[bytes], then_disconnect: bool = False) -> None:
        def run() -> None:
            for line in lines:
                os.write(self.master, line + b"\r\n")
                time.sleep(0.005)
            if then_disconnect:
                time.sleep(0.3)  # let the reader take what was sent, then pull the cable
                self.close_master()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close_master(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(5)
        self.close_master()
        os.close(self.slave)


@pytest.fixture
def board():
    fake = FakeBoard()
    yield fake
    fake.close()


def test_serial_reads_until_the_blocks_are_complete(board: FakeBoard) -> None:
    board.play(OUTPUT)
    log = read_serial(board.port, blocks=2)
    assert profile_table(log.blocks) == TABLE
    assert log.recognitions == [(2040, "yes", 231), (9120, "no", 240)]


def test_serial_for_a_duration_combines_every_block(board: FakeBoard) -> None:
    board.play(OUTPUT)
    log = read_serial(board.port, seconds=1.0)
    assert len(log.blocks) == 2


def test_a_disconnect_half_way_is_an_error_and_writes_nothing(
    board: FakeBoard, tmp_path: Path
) -> None:
    run = make_run(tmp_path)
    before = (run / "results.json").read_bytes()
    board.play(BOOT + BLOCK_1 + BLOCK_2[:2], then_disconnect=True)
    args = command_args(
        "--port", board.port, "--run", str(run), "--variant", "qat-8b", "--seconds", "5"
    )
    with pytest.raises(KwsError, match=f"serial port {board.port} disconnected"):
        args.handler(args)
    assert (run / "results.json").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]  # no temporary file left


def test_serial_without_profile_lines_times_out_with_a_hint(board: FakeBoard) -> None:
    board.play(BOOT)
    with pytest.raises(KwsError, match="is KWS_PROFILE set to 1"):
        read_serial(board.port, seconds=0.5)


def test_a_port_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(KwsError, match="cannot open serial port"):
        read_serial(str(tmp_path / "ttyACM9"))
