"""The train stage: build the configured model and train it with the best checkpoint kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kwscompress.config import TrainConfig
from kwscompress.progress import progress_bar
from kwscompress.protocols import ModelSpec
from kwscompress.stages.features import FeatureSets
from kwscompress.train import set_seed, train_model


def train(
    spec: ModelSpec, sets: FeatureSets, config: TrainConfig, checkpoint: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return the trained model (best validation weights) and the stage summary."""
    set_seed(config.seed)
    model = spec.build(sets.shape, len(sets.labels))
    with progress_bar(f"Training {spec.name}", config.epochs) as advance:
        result = train_model(
            model,
            sets.splits["training"],
            sets.splits["validation"],
            config,
            checkpoint,
            progress=advance,
        )
    summary = {
        "model": spec.name,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "checkpoint": str(checkpoint),
        **result.as_dict(),
    }
    return model, summary
