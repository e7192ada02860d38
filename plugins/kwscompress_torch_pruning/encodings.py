"""Flash bytes of sparse weight tensors: dense, bitmask and CSR encodings.

These are storage sizes only. TFLM's and CMSIS-NN's convolution and fully connected kernels are
dense: they multiply the zeros like any other weight, so a sparse encoding saves flash only when
paired with a sparse kernel that decodes it, and no such kernel runs here.

Each weight tensor is seen as a matrix of ``rows`` = output channels (or output features) by
``columns`` = everything else (``in_channels / groups * kh * kw`` or ``in_features``).

``dense``
    every weight: ``ceil(weights * bits / 8)``.
``bitmask``
    one bit per weight saying whether it is kept, then the nonzero values:
    ``ceil(weights / 8) + ceil(nonzero * bits / 8)``.
``csr``
    compressed sparse rows: the nonzero values, a 16-bit column index per value and ``rows + 1``
    row pointers, 16-bit when ``nonzero <= 65535`` else 32-bit:
    ``ceil(nonzero * bits / 8) + 2 * nonzero + (rows + 1) * pointer_bytes``. Column indices
    need ``columns <= 65536`` to fit 16 bits; wider layers get 32-bit indices.

Biases and other parameters are not counted here: they are stored densely in every encoding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

VALUE_BITS = (8, 32)
"""Value widths every pruning step reports: int8 (what TFLM runs) and float32."""


@dataclass(frozen=True)
class LayerSparsity:
    """What the encodings need to know about one weight tensor."""

    name: str
    rows: int
    columns: int
    weights: int
    nonzero: int

    @classmethod
    def of(cls, name: str, weight: torch.Tensor) -> LayerSparsity:
        """Measure ``weight`` (its first dimension is the row)."""
        rows = int(weight.shape[0])
        return cls(
            name=name,
            rows=rows,
            columns=int(weight.numel() // max(rows, 1)),
            weights=int(weight.numel()),
            nonzero=int(torch.count_nonzero(weight).item()),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def dense_bytes(layer: LayerSparsity, bits: int) -> int:
    """Bytes of the tensor stored densely at ``bits`` per weight."""
    return math.ceil(layer.weights * bits / 8)


def bitmask_bytes(layer: LayerSparsity, bits: int) -> int:
    """Bytes of a presence bitmask plus the nonzero values."""
    return math.ceil(layer.weights / 8) + math.ceil(layer.nonzero * bits / 8)


def csr_bytes(layer: LayerSparsity, bits: int) -> int:
    """Bytes of CSR: values, column indices and row pointers."""
    index_bytes = 2 if layer.columns <= 2**16 else 4
    pointer_bytes = 2 if layer.nonzero <= 2**16 - 1 else 4
    return (
        math.ceil(layer.nonzero * bits / 8)
        + index_bytes * layer.nonzero
        + pointer_bytes * (layer.rows + 1)
    )


def encoding_sizes(layers: list[LayerSparsity], bits: int) -> dict[str, int]:
    """Total ``dense_bytes``, ``bitmask_bytes`` and ``csr_bytes`` of ``layers`` at ``bits``."""
    return {
        "dense_bytes": sum(dense_bytes(layer, bits) for layer in layers),
        "bitmask_bytes": sum(bitmask_bytes(layer, bits) for layer in layers),
        "csr_bytes": sum(csr_bytes(layer, bits) for layer in layers),
    }
