"""The context a compression step runs in: training data, a fine-tuning loop and the seed."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwscompress.config import TrainConfig
from kwscompress.train import LabeledFeatures, train_model


@dataclass
class StepContext:
    """Satisfies :class:`kwscompress.protocols.CompressionContext` for one variant.

    :param train: training features, ``[N, frames, bins]`` or ``[copies, N, frames, bins]``.
    :param validation: validation features (fine-tuning keeps the best validation epoch).
    :param train_config: the baseline's training settings (batch size, weight decay, seed).
    :param finetune_learning_rate: the default learning rate of :meth:`finetune`.
    """

    train: LabeledFeatures
    validation: LabeledFeatures
    labels: list[str]
    train_config: TrainConfig
    finetune_learning_rate: float
    seed: int

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(frames, bins)`` of one clip."""
        frames, bins = self.validation.features.shape[-2:]
        return int(frames), int(bins)

    def training_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        """``count`` seeded random batches of training clips (first augmented copy)."""
        clips = self.train.copies[0]
        rng = np.random.default_rng(self.seed)
        for _ in range(count):
            chosen = rng.choice(len(clips), size=min(batch_size, len(clips)), replace=False)
            yield torch.from_numpy(np.ascontiguousarray(clips[np.sort(chosen)], np.float32))

    def finetune(
        self, model: torch.nn.Module, epochs: int, learning_rate: float | None = None
    ) -> dict[str, Any]:
        """Train ``model`` in place and keep the best epoch: Adam without learning-rate steps,
        otherwise the baseline's training (batch size, weight decay, class weights, frequency
        warping, mixup, label smoothing; no word head). The weights it starts from compete:
        when no epoch beats them on validation they are kept (``best_epoch`` 0), so fine-tuning
        never leaves a variant worse on validation than it found it."""
        config = dataclasses.replace(
            self.train_config,
            epochs=epochs,
            learning_rate=learning_rate or self.finetune_learning_rate,
            lr_step_epochs=max(epochs, 1),
            lr_gamma=1.0,
            seed=self.seed,
            # A fresh word head would start from random weights: fine-tuning goes without.
            word_head=0.0,
        )
        with tempfile.TemporaryDirectory(prefix="kws-finetune-") as folder:
            result = train_model(
                model, self.train, self.validation, config, Path(folder) / "best.pt",
                keep_start=True,
            )  # fmt: skip
        return {
            "epochs": epochs,
            "learning_rate": config.learning_rate,
            "best_epoch": result.best_epoch,
            "best_validation_accuracy": result.best_validation_accuracy,
            "seconds": round(result.seconds, 3),
        }
