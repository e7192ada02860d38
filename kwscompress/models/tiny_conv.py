"""TinyConv: the model of TFLM's micro_speech example and of the course pipeline.

One convolution, ReLU, dropout and one fully connected layer. For the default 49 x 40 features
and 4 classes it has 16,652 parameters (conv 648, fc 16,004) and 336,000 multiply-accumulates
(conv 320,000, fc 16,000).
"""

from __future__ import annotations

import torch
from torch import nn

from kwscompress.errors import KwsError

KERNEL = (10, 8)
STRIDE = (2, 2)
PADDING = (5, 3)


def conv_output_shape(
    input_shape: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[int, int]:
    """Height and width a ``Conv2d`` produces from an ``input_shape`` (frames, bins) input."""
    return tuple(  # type: ignore[return-value]
        (size + 2 * pad - k) // s + 1
        for size, k, s, pad in zip(input_shape, kernel, stride, padding, strict=True)
    )


def check_shape(model: str, input_shape: tuple[int, int], num_classes: int) -> tuple[int, int]:
    """Validate a build request; return ``input_shape`` as a tuple of two ints."""
    if len(input_shape) != 2 or min(input_shape) < 1:
        raise KwsError(
            f"model {model!r} needs features of shape (frames, bins) with both at least 1, "
            f"got {tuple(input_shape)}"
        )
    if num_classes < 2:
        raise KwsError(f"model {model!r} needs at least 2 classes, got {num_classes}")
    return int(input_shape[0]), int(input_shape[1])


class TinyConv(nn.Module):
    """``[N, frames, bins]`` features in, ``[N, num_classes]`` logits out.

    The layers are ``conv`` (``Conv2d(1, channels, (10, 8), stride 2, padding (5, 3))``),
    ``relu``, ``dropout`` (0.5, active only in training) and ``fc``. The convolution output is
    flattened in (channel, height, width) order, so channel ``c`` feeds the ``fc`` input columns
    ``[c * H * W, (c + 1) * H * W)`` (``[500 c, 500 c + 500)`` for 49 x 40 features): a pruner
    that removes a channel removes those columns with it.

    :param input_shape: ``(frames, bins)`` of one clip's features.
    :param num_classes: number of output logits.
    :param channels: convolution filters (8 in TFLM; fewer for a channel-pruned model).
    """

    def __init__(self, input_shape: tuple[int, int], num_classes: int, channels: int = 8):
        super().__init__()
        self.input_shape = check_shape("tiny_conv", input_shape, num_classes)
        if channels < 1:
            raise KwsError(f"tiny_conv needs at least 1 channel, got {channels}")
        height, width = conv_output_shape(self.input_shape, KERNEL, STRIDE, PADDING)
        if height < 1 or width < 1:
            raise KwsError(
                f"tiny_conv's {KERNEL[0]}x{KERNEL[1]} convolution does not fit features of shape "
                f"{self.input_shape}; use at least 1 frame and 2 bins"
            )
        self.conv = nn.Conv2d(1, channels, KERNEL, stride=STRIDE, padding=PADDING)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(channels * height * width, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits; flat ``[N, frames * bins]`` features (as on the device) work too."""
        x = features.reshape(-1, 1, *self.input_shape)
        x = self.dropout(self.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


class TinyConvSpec:
    """The ``tiny_conv`` component: builds :class:`TinyConv`."""

    name = "tiny_conv"
    description = "TFLM micro_speech TinyConv: conv 8x(10x8)/2 + ReLU + dropout + FC"

    def build(self, input_shape: tuple[int, int], num_classes: int) -> TinyConv:
        """A freshly initialised TinyConv with 8 channels."""
        return TinyConv(input_shape, num_classes)
