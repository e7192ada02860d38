"""Helpers shared by the exporters: plain model copies, file names, PyTorch outputs, alignment."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune


def plain_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy of ``model`` with every ``torch.nn.utils.prune`` mask made permanent.

    A pruned module computes ``weight = weight_orig * weight_mask`` in a forward pre-hook;
    exporters want the plain weight tensor, so the copy folds each mask into its weight.
    """
    # A pruned module's ``weight`` is a computed (non-leaf) tensor that deepcopy refuses; copy a
    # detached version (prune.remove recomputes it from weight_orig and the mask anyway).
    memo: dict[int, Any] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                computed = getattr(module, hook._tensor_name)
                memo[id(computed)] = computed.detach().clone()
    plain = copy.deepcopy(model, memo).eval().cpu()
    for module in plain.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return plain


def file_stem(variant_id: str) -> str:
    """A file name stem for a variant id (letters, digits, ``-``, ``_`` and ``.`` kept)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", variant_id).strip("._") or "variant"


def torch_outputs(model: nn.Module, features: np.ndarray, batch: int = 256) -> np.ndarray:
    """``model``'s outputs (logits) for ``features`` ``[N, frames, bins]``, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    clips = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    model.eval()
    try:
        with torch.no_grad():
            chunks = [
                model(clips[i : i + batch].to(device)).cpu() for i in range(0, len(clips), batch)
            ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def align_buffers(model: bytes) -> bytes:
    """``model`` re-packed by tflite-micro's aligner: every buffer at a multiple of 16 bytes.

    The schema asks for it (``force_align: 16``) but neither TensorFlow's converter nor the
    Python flatbuffers builder honours it; Cortex-M kernels read int32 biases in place.
    """
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="kws-align-") as tmp:
        source, target = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite"
        source.write_bytes(model)
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(source), str(target))
        return target.read_bytes()
