"""The ``ptq`` and ``qat`` quantizers (:class:`kwscompress.protocols.Quantizer`).

Both rebuild the float model from Brevitas quant layers
(:func:`~kwscompress_brevitas.qmodels.quantize_float_model`) and set every activation scale by
calibration: ``calibration_batches`` batches of training clips pass through the model inside
Brevitas' ``brevitas.graph.calibrate.calibration_mode``, which collects a high percentile
of each activation and fixes the scales from it. ``ptq`` stops there (optionally after Brevitas'
``brevitas.graph.calibrate.bias_correction_mode``); ``qat`` then fine-tunes weights and
scales through the quantizers (straight-through gradients) with the context's training loop.
Brevitas is imported only when a model is quantized.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from kwscompress.protocols import CompressionContext, StepResult
from kwscompress_brevitas.settings import PTQ, QAT, check_settings

if TYPE_CHECKING:
    from torch import nn

    from kwscompress_brevitas.qmodels import QuantKwsNet


def _calibrated(
    model: nn.Module, context: CompressionContext, settings: dict[str, Any]
) -> tuple[QuantKwsNet, list[torch.Tensor], dict[str, Any]]:
    """A quantized copy of ``model`` with calibrated activation scales, the batches, and info."""
    with warnings.catch_warnings():
        # brevitas.graph announces at import that an optional CUDA kernel package (for
        # Hadamard rotations, not used here) is missing, and that its fx tracer is deprecated.
        warnings.filterwarnings("ignore", message="fast_hadamard_transform", category=UserWarning)
        warnings.filterwarnings("ignore", message="brevitas.fx", category=DeprecationWarning)
        from brevitas.graph.calibrate import calibration_mode

    from kwscompress_brevitas.qmodels import INPUT_BITS, QuantConfig, quantize_float_model

    batches = list(
        context.training_batches(
            settings["calibration_batches"], settings["calibration_batch_size"]
        )
    )
    signed_input = any(bool((batch < 0).any()) for batch in batches)
    quant = QuantConfig(
        weight_bits=settings["weight_bits"],
        act_bits=settings["act_bits"],
        per_channel=settings["per_channel"],
        signed_input=signed_input,
    )
    # Only read from ``model`` (no deepcopy: a tensor that torch.nn.utils.prune computes, such
    # as a masked ``weight``, refuses to be deep-copied).
    qmodel = quantize_float_model(model, quant, tuple(context.labels))
    qmodel.eval()
    with torch.no_grad(), calibration_mode(qmodel):
        for batch in batches:
            qmodel(batch)
    qmodel.eval()
    info = {
        "weight_bits": quant.weight_bits,
        "act_bits": quant.act_bits,
        "per_channel": quant.per_channel,
        "input_bits": INPUT_BITS,
        "signed_input": signed_input,
        "folded_batch_norms": _batch_norms(model),
        "calibration_batches": len(batches),
        "calibration_clips": sum(len(batch) for batch in batches),
    }
    return qmodel, batches, info


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class PtqQuantizer:
    """Post-training quantization: calibrate activation scales on training batches, no training.

    Settings (defaults): ``bits`` (8; 2-8, weights and activations), ``weight_bits`` and
    ``act_bits`` (``bits``), ``per_channel`` (true: per-output-channel convolution weight
    scales), ``calibration_batches`` (10), ``calibration_batch_size`` (100), ``bias_correction``
    (false: Brevitas' bias correction, which moves each layer's bias by the mean error that
    quantization adds to its output on the calibration batches).
    """

    name = "ptq"
    description = "post-training quantization with Brevitas (2-8 bit, calibrated activations)"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check the recipe's keys and fill in defaults (see the class docstring)."""
        return check_settings(self.name, PTQ, values)

    def quantize(
        self, model: nn.Module, context: CompressionContext, **settings: Any
    ) -> StepResult:
        """A calibrated quantized copy of ``model``; ``model`` is unchanged."""
        settings = self.settings(settings)
        qmodel, batches, info = _calibrated(model, context, settings)
        if settings["bias_correction"]:
            from brevitas.graph.calibrate import bias_correction_mode

            # Bias correction hooks the layers, which the device rounding of eval mode skips.
            qmodel.device_rounding = False
            try:
                with torch.no_grad(), bias_correction_mode(qmodel):
                    for batch in batches:
                        qmodel(batch)
            finally:
                qmodel.device_rounding = True
            qmodel.eval()
        info["bias_correction"] = settings["bias_correction"]
        return StepResult(qmodel, info)


class QatQuantizer:
    """Quantization-aware training: calibrate as ``ptq`` does, then fine-tune through quantizers.

    Starts from the float weights; trains weights and quantizer scales for ``epochs`` (3) at
    ``learning_rate`` (the context's fine-tuning rate, ``[compress] finetune_learning_rate``,
    when omitted), keeping the best validation epoch. Other settings as for ``ptq``
    (no ``bias_correction``: training corrects biases itself).
    """

    name = "qat"
    description = "quantization-aware training with Brevitas (2-8 bit, fine-tuned from float)"

    def settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check the recipe's keys and fill in defaults (see the class docstring)."""
        return check_settings(self.name, QAT, values)

    def quantize(
        self, model: nn.Module, context: CompressionContext, **settings: Any
    ) -> StepResult:
        """A quantized copy of ``model`` fine-tuned with quantization; ``model`` is unchanged."""
        settings = self.settings(settings)
        qmodel, _, info = _calibrated(model, context, settings)
        summary = context.finetune(qmodel, settings["epochs"], settings["learning_rate"])
        qmodel.eval()
        info.update(
            epochs=settings["epochs"],
            learning_rate=summary.get("learning_rate", settings["learning_rate"]),
            finetune=summary,
        )
        return StepResult(qmodel, info)
