"""Turning Python values into C++ source text that compiles whatever they contain."""

from __future__ import annotations

import re

_PLAIN = frozenset(range(0x20, 0x7F)) - {
    ord('"'),
    ord("\\"),
    ord("?"),
}  # "?" is escaped so that no "??x" trigraph can form


def string_literal(text: str) -> str:
    """A C++ string literal holding ``text`` as UTF-8.

    Printable ASCII is kept; quotes, backslashes, ``?``, control characters and every byte of a
    non-ASCII character become three-digit octal escapes (an octal escape stops after three
    digits, so a following digit cannot extend it, unlike ``\\x``).
    """
    parts = []
    for byte in text.encode("utf-8"):
        parts.append(chr(byte) if byte in _PLAIN else f"\\{byte:03o}")
    return '"' + "".join(parts) + '"'


def comment_text(text: str) -> str:
    """``text`` made safe for a ``//`` comment: one line of printable ASCII, escaped like
    :func:`string_literal` (no quotes around it)."""
    return string_literal(text)[1:-1]


def identifier(text: str, prefix: str = "kws") -> str:
    """A C/C++ identifier (and Arduino sketch name) made from ``text``.

    Characters other than ASCII letters, digits and ``_`` become ``_``; the result starts with
    ``prefix_`` so it never starts with a digit, and is at most 63 characters long (the Arduino
    limit for sketch names).
    """
    body = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "model"
    return f"{prefix}_{body}"[:63]


def byte_rows(data: bytes, per_row: int = 12) -> list[str]:
    """``data`` as rows of ``0x..`` literals separated by commas (each row ends with a comma)."""
    return [
        " ".join(f"0x{b:02x}," for b in data[start : start + per_row])
        for start in range(0, len(data), per_row)
    ]


def int_rows(values: list[int], per_row: int = 16) -> list[str]:
    """Integers as rows of decimal literals, each row ending with a comma."""
    return [
        " ".join(f"{v}," for v in values[start : start + per_row])
        for start in range(0, len(values), per_row)
    ]


def float_literal(value: float) -> str:
    """A ``float`` literal that reads back as the same float32 value."""
    text = repr(float(value))
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text + "f"
