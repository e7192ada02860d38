"""The ``channel`` pruner: structured, whole convolution filters removed through DepGraph.

torch-pruning's :class:`~torch_pruning.DependencyGraph` traces the model once and, for the
output channels of one convolution, finds everything coupled to them: the batch norm after it,
a depthwise convolution that follows (its channels go too), and the input columns of the next
convolution or of the fully connected layer (for TinyConv, channel ``c`` owns ``fc`` columns
``[500 c, 500 c + 500)``). Pruning the group removes all of them physically, so the model keeps
its class and runs on the same features with fewer parameters and MACs.

The channel counts are chosen here, not by torch-pruning's ``MetaPruner``: its
``int(channels * (1 - ratio))`` floors the kept count through float arithmetic
(``8 * (1 - 0.7)`` is 2.4000000000000004, ``8 * (1 - 0.9)`` is 0.7999999999999998), which is
not the documented rule below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from kwscompress.errors import KwsError
from kwscompress.protocols import CompressionContext, StepResult
from kwscompress_torch_pruning.common import (
    amount_rule,
    check_settings,
    count_to_remove,
    dense_copy,
    example_input,
    parameter_count,
)

NORMS = {"l1": 1.0, "l2": 2.0, "linf": math.inf}
"""Norm name -> the ``ord`` of :func:`torch.linalg.vector_norm`."""

Importance = Callable[[nn.Conv2d], torch.Tensor]
"""Scores the output channels of one convolution; the lowest scores are removed."""


class ChannelPruner:
    """Remove whole output channels of every full (not depthwise) ``Conv2d``.

    Settings: ``amount`` (0 < amount < 1) and ``norm`` (``"l1"`` default, ``"l2"``, ``"linf"``):
    a channel's importance is that norm of its filter weights (``weight[c]``, bias excluded).
    Each pruned convolution with ``C`` output channels loses
    ``removed = floor(amount * C + 1/2)`` channels and keeps ``max(1, C - removed)``; ties in
    importance remove the lower index first. For DS-CNN that is the stem and the four pointwise
    convolutions, uniformly; the depthwise convolutions follow through the dependency graph and
    the classifier's outputs are never touched.
    """

    name = "channel"
    description = "structured: remove Conv2d output channels by L1/L2/Linf norm (torch-pruning)"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """``amount`` (required) and ``norm`` (``l1``, ``l2`` or ``linf``)."""
        return check_settings(self.name, values, {"norm": tuple(NORMS)})

    def prune(self, model: nn.Module, context: CompressionContext, **settings: Any) -> StepResult:
        """Return a physically smaller copy of ``model``; ``model`` is left unchanged."""
        checked = self.settings(settings)
        order = NORMS[checked["norm"]]

        def importance(conv: nn.Conv2d) -> torch.Tensor:
            return torch.linalg.vector_norm(conv.weight.detach().flatten(1), ord=order, dim=1)

        pruned = dense_copy(model)
        info = remove_channels(pruned, context.input_shape, checked["amount"], importance)
        return StepResult(pruned, {"norm": checked["norm"], **info})


def remove_channels(
    model: nn.Module, input_shape: tuple[int, int], amount: float, importance: Importance
) -> dict[str, Any]:
    """Remove the least important output channels of each full ``Conv2d`` of ``model`` in place.

    Every score is computed before anything is removed, so one layer's pruning does not change
    another's ranking.

    :returns: the step's ``info``: per layer the channels before, removed and kept, and the kept
        indices; ``kept_channels`` (one count per pruned layer), ``fc_in_features`` (input
        features of the last ``Linear``) and parameters before and after.
    """
    before = parameter_count(model)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # DepGraph traces through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input(model, input_shape), verbose=False
            )
        plan = []
        for name, conv in _root_convolutions(model, graph):
            channels = conv.out_channels
            kept = max(1, channels - count_to_remove(amount, channels))
            scores = importance(conv).float().cpu()
            # A stable sort: among equal scores the lower index is removed first.
            ranked = torch.argsort(scores, stable=True).tolist()
            removed = sorted(ranked[: channels - kept])
            plan.append((name, conv, channels, removed, scores))
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
                    "importance": [round(float(s), 6) for s in scores],
                }
            )
    finally:
        model.train(was_training)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return {
        "structured": True,
        "amount": amount,
        "rule": amount_rule("channels of each layer") + "; kept = max(1, channels - removed)",
        "layers": layers,
        "kept_channels": [layer["kept"] for layer in layers],
        "fc_in_features": linears[-1].in_features if linears else None,
        "parameters_before": before,
        "parameters": parameter_count(model),
    }


def _root_convolutions(model: nn.Module, graph: tp.DependencyGraph) -> list[tuple[str, nn.Conv2d]]:
    """The full convolutions whose output channels can be pruned, each group once.

    A convolution whose output channels are coupled to an earlier one's (through a residual
    addition, say) is pruned with that one, not again; depthwise and grouped convolutions only
    ever follow.
    """
    covered: set[nn.Module] = set()
    roots = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.groups != 1 or module in covered:
            continue
        group = graph.get_pruning_group(
            module, tp.prune_conv_out_channels, idxs=list(range(module.out_channels))
        )
        covered.update(
            dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)
        )
        roots.append((name, module))
    if not roots:
        raise KwsError(
            f"{type(model).__name__} has no Conv2d with groups=1 whose channels could be pruned"
        )
    return roots
