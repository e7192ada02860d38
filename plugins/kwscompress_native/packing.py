"""Weight words for the SIMD kernels: which weight goes into which byte or nibble.

A kernel reads one 32-bit weight word and unpacks it into 16-bit pairs that feed ``SMLAD``:

* 16-bit words (8-bit weights pre-widened at generation time, used where a layer reuses each
  weight for many pixels and its weights are few) hold one pair and need no unpacking.
* 8-bit words hold two pairs: ``SXTB16(w)`` = (byte 0, byte 2) and ``SXTB16(ROR(w, 8))`` =
  (byte 1, byte 3).
* 4-bit words hold four pairs, every weight scaled by 16 (so the accumulator is exactly 16 times
  the true sum and one arithmetic shift restores it): ``h = w & 0xF0F0F0F0`` gives the high
  nibbles, ``l = (w << 4) & 0xF0F0F0F0`` the low ones, and ``SXTB16`` / ``SXTB16(ROR 8)`` of
  each give (byte 0, byte 2) and (byte 1, byte 3).

Callers list the weights of a word in the order the kernel consumes them (pair 0 low, pair 0
high, pair 1 low, ...); these functions place them so the unpacked pairs come out in that order.
"""

from __future__ import annotations

import numpy as np

PAIRS_PER_WORD = {16: 1, 8: 2, 4: 4}
NIBBLE_MASK = 0xF0F0F0F0


def storage_bits(weight_bits: int) -> int:
    """Bits per stored weight: 4 for 2..4-bit variants (nibble packed), else 8."""
    return 4 if weight_bits <= 4 else 8


def pack_words(consumed: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``[words, 2 * pairs_per_word]`` weights (consumption order) into uint8 bytes."""
    w = np.asarray(consumed, np.int64)
    if bits == 16:  # one pre-widened pair per word: low halfword first
        return (w.reshape(-1, 2).astype("<i2")).view(np.uint8).reshape(-1)
    if bits == 8:
        # pair0 = (b0, b2), pair1 = (b1, b3)
        out = np.stack([w[:, 0], w[:, 2], w[:, 1], w[:, 3]], axis=1)
        return (out & 0xFF).astype(np.uint8).reshape(-1)
    # pair0 = hi(b0, b2), pair1 = hi(b1, b3), pair2 = lo(b0, b2), pair3 = lo(b1, b3)
    hi = np.stack([w[:, 0], w[:, 2], w[:, 1], w[:, 3]], axis=1)
    lo = np.stack([w[:, 4], w[:, 6], w[:, 5], w[:, 7]], axis=1)
    return (((hi & 0xF) << 4) | (lo & 0xF)).astype(np.uint8).reshape(-1)


def unpack_pairs_c(word: str, bits: int) -> tuple[list[str], list[str]]:
    """C statements that unpack the variable ``word`` and the names of its pair variables."""
    if bits == 16:
        return [], [word]
    if bits == 8:
        names = [f"{word}_p0", f"{word}_p1"]
        return [
            f"uint32_t {names[0]} = KWS_SXTB16({word});",
            f"uint32_t {names[1]} = KWS_SXTB16_ROR8({word});",
        ], names
    names = [f"{word}_p{i}" for i in range(4)]
    return [
        f"uint32_t {word}_h = {word} & 0xF0F0F0F0u;",
        f"uint32_t {word}_l = ({word} << 4) & 0xF0F0F0F0u;",
        f"uint32_t {names[0]} = KWS_SXTB16({word}_h);",
        f"uint32_t {names[1]} = KWS_SXTB16_ROR8({word}_h);",
        f"uint32_t {names[2]} = KWS_SXTB16({word}_l);",
        f"uint32_t {names[3]} = KWS_SXTB16_ROR8({word}_l);",
    ], names


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Flat weights two per byte (even index in the low nibble) for the scalar kernels."""
    v = np.asarray(values, np.int64).reshape(-1)
    if len(v) % 2:
        v = np.append(v, 0)
    return ((v[0::2] & 0xF) | ((v[1::2] & 0xF) << 4)).astype(np.uint8)
