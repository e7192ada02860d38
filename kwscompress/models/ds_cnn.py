"""DS-CNN small from "Hello Edge: Keyword Spotting on Microcontrollers" (Zhang et al., 2017).

A 10x4 convolution with stride 2, four depthwise-separable blocks, global average pooling and
one fully connected layer, every convolution followed by batch norm and ReLU. Convolutions carry
no bias because the batch norm after each one has its own shift. For 49 x 40 features and
4 classes it has 22,660 parameters and 10,624,256 multiply-accumulates.
"""

from __future__ import annotations

import torch
from torch import nn

from kwscompress.models.tiny_conv import check_shape

FILTERS = 64
BLOCKS = 4


def _conv_bn_relu(conv: nn.Conv2d) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU())


class DsCnn(nn.Module):
    """``[N, frames, bins]`` features in, ``[N, num_classes]`` logits out.

    Layers: ``stem`` (``Conv2d(1, 64, (10, 4), stride 2, padding (5, 1))`` + BN + ReLU),
    ``blocks`` (four of: 3x3 depthwise conv + BN + ReLU, 1x1 pointwise conv to 64 + BN + ReLU),
    global average pooling over time and frequency, then ``fc``.

    :param input_shape: ``(frames, bins)`` of one clip's features.
    :param num_classes: number of output logits.
    """

    def __init__(self, input_shape: tuple[int, int], num_classes: int):
        super().__init__()
        self.input_shape = check_shape("ds_cnn", input_shape, num_classes)
        # Padding (5, 1) gives TensorFlow's "SAME" output size, 25 x 20 for 49 x 40 features.
        self.stem = _conv_bn_relu(
            nn.Conv2d(1, FILTERS, (10, 4), stride=2, padding=(5, 1), bias=False)
        )
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    _conv_bn_relu(
                        nn.Conv2d(FILTERS, FILTERS, 3, padding=1, groups=FILTERS, bias=False)
                    ),
                    _conv_bn_relu(nn.Conv2d(FILTERS, FILTERS, 1, bias=False)),
                )
                for _ in range(BLOCKS)
            )
        )
        self.fc = nn.Linear(FILTERS, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits; ``features`` may also be flat, ``[N, frames * bins]``."""
        x = features.reshape(-1, 1, *self.input_shape)
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


class DsCnnSpec:
    """The ``ds_cnn`` component: builds :class:`DsCnn`."""

    name = "ds_cnn"
    description = "DS-CNN small (Hello Edge): conv 64x(10x4)/2 + 4 depthwise-separable blocks"

    def build(self, input_shape: tuple[int, int], num_classes: int) -> DsCnn:
        """A freshly initialised DS-CNN small."""
        return DsCnn(input_shape, num_classes)
