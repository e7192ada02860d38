"""Depthwise-separable CNNs: DS-CNN small (Hello Edge) and its temporal form, the default model.

Both are one chain: a first convolution, depthwise-separable blocks (a depthwise convolution,
then a 1x1 pointwise convolution), global average pooling and one fully connected layer, every
convolution followed by batch norm and ReLU. Convolutions carry no bias because the batch norm
after each one has its own shift. Every plugin that handles one handles the other (they are the
same class with other kernel sizes).

* ``ds_cnn`` (Zhang et al., 2017, "Hello Edge: Keyword Spotting on Microcontrollers"): a 10x4
  convolution with stride 2 and four blocks of 3x3 depthwise convolutions, all at 25 x 20. For
  49 x 40 features and 4 classes: 22,660 parameters and 10,624,256 multiply-accumulates.
* ``tc_ds_cnn`` (temporal DS-CNN, the default): the first convolution spans all frequency bins
  (3 frames x 40 bins), as TC-ResNet's first layer does, so every later layer is a 1-D
  convolution over time: four blocks of 9x1 depthwise convolutions, each halving the frames
  (49, 25, 13, 7, 4). For 49 x 40 features and 4 classes: 27,780 parameters and 605,504
  multiply-accumulates, 17 times fewer than ``ds_cnn`` at a similar size, which is what lets it
  train in the demo's budget on a laptop CPU (0.44 s an epoch of 3,000 clips on two cores in
  the channels-last layout it trains in, ``ds_cnn`` 6 s). On the demo's synthetic split it
  reached 89 % test accuracy in 100 epochs where ``tiny_conv`` reaches 77 %
  (docs/rejection.rst).
"""

from __future__ import annotations

import torch
from torch import nn

from kwscompress.errors import KwsError
from kwscompress.models.tiny_conv import check_shape

FILTERS = 64
BLOCKS = 4


def _conv_bn_relu(conv: nn.Conv2d) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU())


class DsCnn(nn.Module):
    """``[N, frames, bins]`` features in, ``[N, num_classes]`` logits out.

    Layers: ``stem`` (a convolution to ``filters`` channels + BN + ReLU), ``blocks`` (each: a
    depthwise convolution + BN + ReLU, then a 1x1 pointwise convolution to ``filters`` + BN +
    ReLU), global average pooling over time and frequency, then ``fc``. The defaults are DS-CNN
    small: ``Conv2d(1, 64, (10, 4), stride 2, padding (5, 1))`` and four 3x3 depthwise blocks.

    :param input_shape: ``(frames, bins)`` of one clip's features.
    :param num_classes: number of output logits.
    :param filters: channels of every convolution.
    :param blocks: depthwise-separable blocks.
    :param stem_kernel: kernel of the first convolution; a width of 0 means all bins.
    :param stem_stride: its stride.
    :param stem_padding: its zero padding (rows, columns).
    :param block_kernel: kernel of the depthwise convolutions (padded to keep the size at
        stride 1).
    :param block_stride: their stride.
    :param name: the component name that error messages give.
    """

    memory_format = torch.channels_last
    """The layout :func:`kwscompress.train.train_model` trains it in: oneDNN's channels-last
    depthwise convolutions and batch norms take about two thirds of the time of the default
    layout's for ``tc_ds_cnn`` (a training step of 100 clips 16 -> 11 ms on two cores; see
    :doc:`/models`)."""

    def __init__(
        self,
        input_shape: tuple[int, int],
        num_classes: int,
        filters: int = FILTERS,
        blocks: int = BLOCKS,
        stem_kernel: tuple[int, int] = (10, 4),
        stem_stride: tuple[int, int] = (2, 2),
        stem_padding: tuple[int, int] = (5, 1),
        block_kernel: tuple[int, int] = (3, 3),
        block_stride: tuple[int, int] = (1, 1),
        name: str = "ds_cnn",
    ):
        super().__init__()
        self.input_shape = check_shape(name, input_shape, num_classes)
        if filters < 1 or blocks < 0:
            raise KwsError(f"{name} needs filters >= 1 and blocks >= 0, got {filters}, {blocks}")
        stem_kernel = (stem_kernel[0], stem_kernel[1] or self.input_shape[1])
        # Padding (5, 1) gives TensorFlow's "SAME" output size, 25 x 20 for 49 x 40 features.
        self.stem = _conv_bn_relu(
            nn.Conv2d(1, filters, stem_kernel, stride=stem_stride, padding=stem_padding, bias=False)
        )
        block_padding = (block_kernel[0] // 2, block_kernel[1] // 2)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    _conv_bn_relu(
                        nn.Conv2d(
                            filters,
                            filters,
                            block_kernel,
                            stride=block_stride,
                            padding=block_padding,
                            groups=filters,
                            bias=False,
                        )
                    ),
                    _conv_bn_relu(nn.Conv2d(filters, filters, 1, bias=False)),
                )
                for _ in range(blocks)
            )
        )
        self.fc = nn.Linear(filters, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits; ``features`` may also be flat, ``[N, frames * bins]``."""
        x = features.reshape(-1, 1, *self.input_shape)
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


class DsCnnSpec:
    """The ``ds_cnn`` component: builds DS-CNN small."""

    name = "ds_cnn"
    description = "DS-CNN small (Hello Edge): conv 64x(10x4)/2 + 4 depthwise-separable blocks"

    def build(
        self, input_shape: tuple[int, int], num_classes: int, filters: int = FILTERS
    ) -> DsCnn:
        """A freshly initialised DS-CNN small (``filters`` channels: other widths for studies
        such as ``benchmarks/bench_seeds.py --filters``)."""
        return DsCnn(input_shape, num_classes, filters=filters)


class TcDsCnnSpec:
    """The ``tc_ds_cnn`` component: the temporal DS-CNN, the default model."""

    name = "tc_ds_cnn"
    description = (
        "temporal DS-CNN: conv 64x(3 x all bins) + 4 depthwise-separable 9x1/2 blocks over time"
    )

    def build(
        self, input_shape: tuple[int, int], num_classes: int, filters: int = FILTERS
    ) -> DsCnn:
        """A freshly initialised temporal DS-CNN (64 filters unless told, four blocks)."""
        return DsCnn(
            input_shape,
            num_classes,
            filters=filters,
            stem_kernel=(3, 0),
            stem_stride=(1, 1),
            stem_padding=(1, 0),
            block_kernel=(9, 1),
            block_stride=(2, 1),
            name=self.name,
        )
