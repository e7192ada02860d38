"""The settings of the ``ptq`` and ``qat`` quantizers: keys, defaults, ranges.

Both take ``bits`` (shorthand for equal weight and activation bits, or ``"w4a8"`` for 4-bit
weights and 8-bit activations), ``weight_bits``, ``act_bits`` (each overrides the shorthand),
``per_channel``, ``calibration_batches`` and
``calibration_batch_size``; ``ptq`` adds ``bias_correction``, ``qat`` adds ``epochs`` and
``learning_rate``. The checked settings always carry ``weight_bits`` and ``act_bits`` and never
``bits``, so ``bits = 4`` and ``weight_bits = 4, act_bits = 4`` are the same variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kwscompress.errors import ConfigError

MIN_BITS, MAX_BITS = 2, 8
DEFAULT_BITS = 8
BITS_PAIR = re.compile(r"w(\d+)a(\d+)")
"""``bits = "w4a8"``: weight and activation bits in one value, so one list can sweep both."""


@dataclass(frozen=True)
class Setting:
    """One key: its default and what values it accepts."""

    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    optional: bool = False
    """Whether ``None`` is accepted (meaning: the context's default)."""

    def valid(self) -> str:
        """What the key accepts, for error messages."""
        if self.kind is bool:
            return "true or false"
        kind = "an integer" if self.kind is int else "a number"
        text = f"{kind} from {self.low:g} to {self.high:g}"
        return text + (" (or omitted)" if self.optional else "")

    def check(self, key: str, value: Any, method: str) -> Any:
        """``value`` if it is valid for ``key``, else a ConfigError naming both and the range."""
        if value is None and self.optional:
            return None
        ok = isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and self.kind is not bool:
            ok = self.low <= value <= self.high
        if not ok:
            raise ConfigError(
                f"quantizer {method!r}: {key} = {value!r} is not valid; use {self.valid()}"
            )
        return value


COMMON = {
    "bits": Setting(DEFAULT_BITS, int, MIN_BITS, MAX_BITS),
    "weight_bits": Setting(None, int, MIN_BITS, MAX_BITS, optional=True),
    "act_bits": Setting(None, int, MIN_BITS, MAX_BITS, optional=True),
    "per_channel": Setting(True, bool),
    "calibration_batches": Setting(10, int, 1, 1000),
    "calibration_batch_size": Setting(100, int, 1, 10000),
}
"""Keys of both quantizers. ``weight_bits`` / ``act_bits`` default to ``bits``."""

PTQ = {**COMMON, "bias_correction": Setting(False, bool)}
QAT = {
    **COMMON,
    "epochs": Setting(3, int, 1, 1000),
    "learning_rate": Setting(None, float, 1e-7, 1.0, optional=True),
}


def check_settings(method: str, keys: dict[str, Setting], values: dict[str, Any]) -> dict[str, Any]:
    """Validate ``values`` against ``keys`` and fill in defaults; resolve ``bits``.

    :raises ConfigError: an unknown key (listing the valid ones) or a bad value (naming the key,
        the value and the valid range).
    """
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ConfigError(
            f"quantizer {method!r}: unknown setting {unknown[0]!r}; valid settings: "
            + ", ".join(keys)
        )
    values = _split_bits_pair(method, values)
    checked = {
        key: setting.check(key, values[key], method) if key in values else setting.default
        for key, setting in keys.items()
    }
    bits = checked.pop("bits")
    for key in ("weight_bits", "act_bits"):
        if checked[key] is None:
            checked[key] = bits
    return checked


def _split_bits_pair(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """``bits = "w4a8"`` as ``weight_bits = 4, act_bits = 8`` (explicit keys still win)."""
    bits = values.get("bits")
    if not isinstance(bits, str):
        return values
    match = BITS_PAIR.fullmatch(bits)
    if match is None:
        raise ConfigError(
            f"quantizer {method!r}: bits = {bits!r} is not valid; use an integer from "
            f"{MIN_BITS} to {MAX_BITS} or 'w<weight bits>a<activation bits>' such as 'w4a8'"
        )
    split = {key: value for key, value in values.items() if key != "bits"}
    split.setdefault("weight_bits", int(match[1]))
    split.setdefault("act_bits", int(match[2]))
    return split
