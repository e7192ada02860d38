"""The ``fvcore`` estimator: parameters and MACs from fvcore, activations from forward hooks."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from kwscompress_fvcore.activations import walk_activations

MAC_OPERATORS = frozenset({"conv", "linear", "addmm", "mm", "bmm", "matmul", "einsum"})
"""fvcore operators whose count is multiply-accumulates (its other handles count plain ops)."""

_BIAS_AFTER_MACS = (nn.modules.conv._ConvNd, nn.Linear)
"""Layers whose bias fvcore leaves out of its count (a separate add per output element)."""


class FvcoreEstimator:
    """Static costs of a model: fvcore's ``FlopCountAnalysis`` plus forward-hook activations.

    :meth:`estimate` returns raw counts; :func:`kwscompress.estimate.estimate_model` turns them
    into FLOPs under a named convention, bytes, board fit and throughput.
    """

    name = "fvcore"
    description = "parameters and MACs (fvcore), activation sizes and peak live memory (hooks)"

    def estimate(self, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """Count one forward pass of ``model`` on a zero tensor of ``input_shape`` (with batch).

        Per leaf module, in execution order: trainable ``parameters``, ``macs`` (fvcore's count
        of conv/linear/matmul operators), ``other_ops`` (fvcore's count of its other operators:
        norms, pooling, upsampling), ``bias_elements`` and ``bias_channels`` (output elements and
        output channels that receive a bias add fvcore does not count), ``calls``,
        ``output_shape`` and ``output_elements`` (of its first call) and ``live_elements``
        (activation elements live while it runs). Counts cover every call of a module.
        """
        device = next(model.parameters(), torch.empty(0)).device
        example = torch.zeros(input_shape, device=device)
        was_training = model.training
        model.eval()
        try:
            by_module, by_operator = _fvcore_counts(model, example)
            walk = walk_activations(model, example)
        finally:
            model.train(was_training)

        modules = dict(model.named_modules())
        layers = []
        for call in walk.layers:
            module = modules[call.module_name]
            counts = by_module.get(call.module_name, {})
            macs = sum(v for op, v in counts.items() if op in MAC_OPERATORS)
            bias_elements = bias_channels = 0
            if isinstance(module, _BIAS_AFTER_MACS) and module.bias is not None:
                bias_elements = call.total_output_elements
                bias_channels = (
                    call.total_output_channels
                    if isinstance(module, nn.modules.conv._ConvNd)
                    else call.total_output_elements
                )
            layers.append(
                {
                    "name": call.name,
                    "type": call.type,
                    "calls": call.calls,
                    "parameters": _trainable(module.parameters(recurse=False)),
                    "macs": int(macs),
                    "other_ops": int(sum(counts.values()) - macs),
                    "bias_elements": bias_elements,
                    "bias_channels": bias_channels,
                    "output_shape": call.output_shape,
                    "output_elements": call.output_elements,
                    "live_elements": call.live_elements,
                }
            )
        total_macs = sum(v for op, v in by_operator.items() if op in MAC_OPERATORS)
        return {
            "estimator": self.name,
            "input_shape": list(input_shape),
            "layers": layers,
            "total": {
                "parameters": _trainable(model.parameters()),
                "macs": int(total_macs),
                "other_ops": int(sum(by_operator.values()) - total_macs),
                "count_by_operator": {op: int(v) for op, v in sorted(by_operator.items())},
            },
            "memory": {
                "input_elements": walk.input_elements,
                "output_elements": walk.output_elements,
                "peak_live_elements": walk.peak_live_elements,
                "peak_at_layer": walk.peak_at_layer,
            },
        }


def _fvcore_counts(
    model: nn.Module, example: torch.Tensor
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    # fvcore.nn imports a module that calls the deprecated torch.jit.script at import time, and
    # tracing warns about Python control flow; neither says anything about the counts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, (example,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with torch.no_grad():
            by_module = analysis.by_module_and_operator()
            by_operator = analysis.by_operator()
    return {name: dict(c) for name, c in by_module.items()}, dict(by_operator)


def _trainable(parameters: Any) -> int:
    return sum(p.numel() for p in parameters if p.requires_grad)
