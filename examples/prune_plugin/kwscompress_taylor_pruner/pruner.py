"""The ``taylor`` pruner: remove the channels whose loss the model would miss least.

Importance is torch-pruning's first-order Taylor criterion (Molchanov et al., CVPR 2019): for
each channel, the sum over its coupled weights of ``|w * dL/dw|``, an estimate of how much the
loss changes when the channel is removed.

Which loss: :meth:`~kwscompress.protocols.CompressionContext.training_batches` hands a step
features only, without labels. So the loss is the cross-entropy of the model's own predicted
class, ``-log p(argmax)``. It measures how much a channel holds up the model's current
decisions, which match the true labels on most training clips of a trained model. Clips the
model is unsure of weigh most (a confident prediction has a small gradient): those near the
decision boundary, where a removed channel would flip an answer.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional
from torch.nn.utils import prune as torch_prune

from kwscompress.errors import ConfigError
from kwscompress.protocols import CompressionContext, StepResult

DEFAULTS = {"batches": 8, "batch_size": 64}
"""Gradient batches and clips per batch, when the recipe does not say."""


class TaylorPruner:
    """Structured: remove output channels of every full ``Conv2d`` by first-order Taylor score.

    Settings: ``amount`` (0 < amount < 1), ``batches`` and ``batch_size`` (the training clips
    the gradients are averaged over). Each pruned convolution with ``C`` channels keeps
    ``max(1, C - floor(amount * C + 1/2))``, like the built-in ``channel`` pruner, so the two
    compare at equal sizes.
    """

    name = "taylor"
    description = "structured: remove Conv2d channels by first-order Taylor score (example plugin)"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check ``amount`` (required), ``batches`` and ``batch_size``; fill in defaults."""
        valid = ["amount", *DEFAULTS]
        for key in values:
            if key not in valid:
                raise ConfigError(
                    f"taylor pruner: unknown setting {key!r}; valid settings: {', '.join(valid)}"
                )
        amount = values.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount < 1:
            raise ConfigError(
                f"taylor pruner: setting 'amount' = {amount!r} is out of range; "
                "valid: a number with 0 < amount < 1"
            )
        checked: dict[str, Any] = {"amount": float(amount)}
        for key, default in DEFAULTS.items():
            value = values.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"taylor pruner: setting {key!r} = {value!r} is out of range; "
                    "valid: an integer of at least 1"
                )
            checked[key] = value
        return checked

    def prune(self, model: nn.Module, context: CompressionContext, **settings: Any) -> StepResult:
        """Return a physically smaller copy of ``model``; ``model`` itself is left unchanged."""
        checked = self.settings(settings)
        pruned = copy.deepcopy(model)
        _fold_masks(pruned)
        before = sum(p.numel() for p in pruned.parameters())
        pruned.eval()  # no dropout, batch norm on its running statistics
        device = next(pruned.parameters()).device
        example = torch.zeros((1, *context.input_shape), device=device)
        with torch.enable_grad():  # DepGraph traces through autograd, and the scores need grads
            graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
            pruned.zero_grad(set_to_none=True)
            for features in context.training_batches(checked["batches"], checked["batch_size"]):
                logits = pruned(features.to(device))
                loss = functional.cross_entropy(logits, logits.argmax(dim=1).detach())
                (loss / checked["batches"]).backward()

        # Score every group first (gradients belong to the unpruned model), then remove.
        importance = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
        plan = []
        for name, conv in _full_convolutions(pruned):
            group = graph.get_pruning_group(
                conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels))
            )
            scores = importance(group).detach().cpu()
            channels = conv.out_channels
            removed_count = math.floor(
                Fraction(repr(checked["amount"])) * channels + Fraction(1, 2)
            )
            kept = max(1, channels - removed_count)
            removed = sorted(torch.argsort(scores, stable=True)[: channels - kept].tolist())
            plan.append((name, conv, channels, removed, scores))
        pruned.zero_grad(set_to_none=True)

        layers = []
        for name, conv, channels, removed, scores in plan:
            if removed:
                graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed).prune()
            layers.append(
                {
                    "name": name,
                    "channels": channels,
                    "removed": len(removed),
                    "kept": channels - len(removed),
                    "kept_indices": sorted(set(range(channels)) - set(removed)),
                    "importance": [float(s) for s in scores],
                }
            )
        linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
        # The keys the built-in "Pruning" report section reads for a structured pruner.
        info = {
            "structured": True,
            "criterion": "first-order Taylor |w * dL/dw|, L = cross-entropy of the predicted class",
            "amount": checked["amount"],
            "gradient_clips": checked["batches"] * checked["batch_size"],
            "rule": "removed = floor(amount * channels + 1/2); kept = max(1, channels - removed)",
            "layers": layers,
            "kept_channels": [layer["kept"] for layer in layers],
            "fc_in_features": linears[-1].in_features if linears else None,
            "parameters_before": before,
            "parameters": sum(p.numel() for p in pruned.parameters()),
        }
        return StepResult(pruned, info)


def _full_convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    # Depthwise convolutions follow the channels of the convolution before them (DepGraph puts
    # them in its group); classifier outputs are never a root, so the class count stays.
    return [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1
    ]


def _fold_masks(model: nn.Module) -> None:
    # A model that an unstructured pruner masked earlier: make its zeros plain weights first.
    for module in model.modules():
        for name in [n for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]:
            torch_prune.remove(module, name.removesuffix("_orig"))
