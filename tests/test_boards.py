"""Board profiles: the data file loads, the reference board is right, unknown names are errors."""

from __future__ import annotations

import pytest

from kwscompress.boards import DEFAULT_BOARD, Board, boards, get_board
from kwscompress.errors import KwsError, UnknownComponentError

REQUIRED = {"nano33ble", "nano_rp2040_connect", "esp32s3", "stm32f746g_disco", "pico"}


def test_required_boards_are_profiled_with_sane_sizes() -> None:
    known = boards()
    assert set(known) >= REQUIRED
    for name, board in known.items():
        assert board.name == name
        assert board.title and board.core and board.source
        # Datasheet sizes are whole KB; clocks are tens to hundreds of MHz.
        assert board.flash_bytes % 1024 == 0 and board.flash_bytes >= 256 * 1024
        assert board.ram_bytes % 1024 == 0 and 64 * 1024 <= board.ram_bytes <= board.flash_bytes
        assert 10e6 <= board.clock_hz <= 1e9


def test_reference_board_matches_the_design_numbers() -> None:
    board = get_board(DEFAULT_BOARD)
    assert board == get_board("nano33ble")
    assert (board.flash_bytes, board.ram_bytes, board.clock_hz) == (1_048_576, 262_144, 64_000_000)
    assert "Cortex-M4F" in board.core
    assert board.as_dict()["ram_bytes"] == 262_144


def test_unknown_board_lists_the_valid_names() -> None:
    with pytest.raises(UnknownComponentError) as info:
        get_board("nano34")
    message = str(info.value)
    assert "unknown board 'nano34'" in message
    assert all(name in message for name in REQUIRED)
    assert isinstance(info.value, KwsError)


def test_board_is_a_frozen_value() -> None:
    board = get_board("pico")
    assert isinstance(board, Board)
    with pytest.raises(AttributeError):
        board.ram_bytes = 0  # type: ignore[misc]
