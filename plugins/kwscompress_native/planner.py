"""Static activation planning: every intermediate buffer gets an offset in one arena.

Buffers whose lifetimes (first and last op that touch them) overlap must not overlap in memory;
placing the largest first at the lowest offset that fits is the greedy-by-size strategy TFLM's
``GreedyMemoryPlanner`` also uses. The arena size is the RAM the activations really need.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 8


@dataclass
class Buffer:
    """One activation or scratch buffer: size in bytes and the op range it is live in."""

    name: str
    size: int
    first: int
    last: int
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        """Whether both are live during some op."""
        return self.first <= other.last and other.first <= self.last


def plan(buffers: list[Buffer]) -> int:
    """Assign ``offset`` to each buffer; return the arena size in bytes."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first)):
        size = _aligned(buf.size)
        offset = 0
        for other in sorted((p for p in placed if p.overlaps_in_time(buf)), key=lambda p: p.offset):
            if offset + size <= other.offset:
                break
            offset = max(offset, other.offset + _aligned(other.size))
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + _aligned(b.size) for b in buffers), default=0)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
