"""Board profiles: flash, RAM, clock and core of the microcontroller boards kwscompress targets.

The profiles are data, in ``boards.toml`` beside this module; add a board there. Sizes are in
bytes (1 KB = 1,024 B, 1 MB = 1,048,576 B, as in the datasheets) and count only the memory a
sketch can normally use for the model: internal SRAM and the program flash.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from kwscompress.errors import UnknownComponentError

DEFAULT_BOARD = "nano33ble"
"""The board of the reference workflow (Arduino Nano 33 BLE Sense)."""


@dataclass(frozen=True)
class Board:
    """One board profile."""

    name: str
    """Short name used on the command line and in the config (``nano33ble``)."""
    title: str
    """Human-readable name."""
    core: str
    """CPU core and chip."""
    clock_hz: int
    """Core clock in Hz."""
    flash_bytes: int
    """Program flash in bytes."""
    ram_bytes: int
    """Internal RAM in bytes."""
    sketch_flash_bytes: int | None = None
    """Flash a sketch can really use, where a bootloader or core keeps the rest (None: all)."""
    source: str = ""
    """Where the figures come from."""
    notes: str = ""
    """Caveats (external memory not counted, missing FPU, ...)."""

    @property
    def usable_flash_bytes(self) -> int:
        """The flash budgets are checked against: what a sketch can use."""
        return self.sketch_flash_bytes or self.flash_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready profile (with ``usable_flash_bytes``)."""
        return {**asdict(self), "usable_flash_bytes": self.usable_flash_bytes}


@cache
def boards() -> dict[str, Board]:
    """Every known board profile, by name, in the order of ``boards.toml``."""
    text = resources.files("kwscompress").joinpath("boards.toml").read_text(encoding="utf-8")
    return {name: Board(name=name, **values) for name, values in tomllib.loads(text).items()}


def get_board(name: str) -> Board:
    """The profile called ``name``; an unknown name raises an error listing the valid ones."""
    known = boards()
    if name not in known:
        raise UnknownComponentError("board", name, known)
    return known[name]
