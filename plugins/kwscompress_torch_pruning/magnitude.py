"""The ``magnitude`` pruner: unstructured, the smallest |w| of Conv2d and Linear weights go."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils import prune

from kwscompress.errors import KwsError
from kwscompress.protocols import CompressionContext, StepResult
from kwscompress_torch_pruning.common import (
    amount_rule,
    check_settings,
    count_to_remove,
    dense_copy,
    detach_masked_weights,
    prunable_layers,
)
from kwscompress_torch_pruning.encodings import VALUE_BITS, LayerSparsity, encoding_sizes

SCOPES = ("global", "layer")

SPEED_NOTE = (
    "zeros are stored, not skipped: dense kernels (TFLM, CMSIS-NN) run exactly as many "
    "multiply-accumulates as before, so latency does not drop; sparse encodings only save flash "
    "when a sparse kernel decodes them"
)


class MagnitudePruner:
    """Zero the weights of smallest magnitude in every ``Conv2d`` and ``Linear`` (not biases).

    Settings: ``amount`` (0 < amount < 1, the fraction of those weights to zero) and ``scope``:
    ``"global"`` (default) ranks all weights together, so layers end up with different
    sparsities; ``"layer"`` zeroes the same fraction of each layer.

    The number zeroed is exactly ``floor(amount * n + 1/2)`` of the ``n`` weights in scope
    (:func:`~kwscompress_torch_pruning.common.count_to_remove`). The zeros are kept as
    ``torch.nn.utils.prune`` masks on the modules, so a later fine-tuning step cannot revive
    them; :func:`~kwscompress_torch_pruning.common.make_pruning_permanent` folds the masks in.
    """

    name = "magnitude"
    description = (
        "unstructured: zero the smallest |w| of Conv2d/Linear weights (global or per layer)"
    )

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """``amount`` (required) and ``scope`` (``global`` or ``layer``)."""
        return check_settings(self.name, values, {"scope": SCOPES})

    def prune(self, model: nn.Module, context: CompressionContext, **settings: Any) -> StepResult:
        """Return a masked copy of ``model``; ``model`` is left unchanged."""
        checked = self.settings(settings)
        amount, scope = checked["amount"], checked["scope"]
        # Earlier masks are folded in first, so existing zeros count towards the target and the
        # result has exactly the requested sparsity (not a fraction of what was left).
        pruned = dense_copy(model)
        layers = prunable_layers(pruned)
        if not layers:
            raise KwsError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
        if scope == "global":
            total = sum(module.weight.numel() for _, module in layers)
            prune.global_unstructured(
                [(module, "weight") for _, module in layers],
                pruning_method=prune.L1Unstructured,
                amount=count_to_remove(amount, total),
            )
        else:
            for _, module in layers:
                prune.l1_unstructured(
                    module, "weight", amount=count_to_remove(amount, module.weight.numel())
                )
        detach_masked_weights(pruned)  # the core may deep-copy the result
        return StepResult(pruned, magnitude_info(pruned, amount, scope))


def magnitude_info(model: nn.Module, amount: float, scope: str) -> dict[str, Any]:
    """The facts of a magnitude-pruned model for its row's ``steps[i].info``."""
    sparsity = [
        LayerSparsity.of(name, module.weight.detach()) for name, module in prunable_layers(model)
    ]
    weights = sum(layer.weights for layer in sparsity)
    nonzero = sum(layer.nonzero for layer in sparsity)
    other = sum(p.numel() for p in model.parameters()) - sum(
        module.weight.numel() for _, module in prunable_layers(model)
    )
    return {
        "structured": False,
        "amount": amount,
        "scope": scope,
        "rule": amount_rule("weights in scope" if scope == "global" else "weights of each layer"),
        "prunable_weights": weights,
        "zero_weights": weights - nonzero,
        "nonzero_weights": nonzero,
        "sparsity": (weights - nonzero) / weights,
        "other_parameters": other,
        "layers": [
            {**layer.as_dict(), "sparsity": 1 - layer.nonzero / max(layer.weights, 1)}
            for layer in sparsity
        ],
        "encodings": {str(bits): encoding_sizes(sparsity, bits) for bits in VALUE_BITS},
        "speed": SPEED_NOTE,
    }
