"""What both pruners share: settings checks, the amount-to-count rule, copying a model safely."""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from kwscompress.errors import ConfigError


def amount_rule(items: str) -> str:
    """The rounding rule as recorded in each step's ``info`` (``items``: what is counted)."""
    return f"removed = floor(amount * {items} + 1/2), exact on the decimal amount"


def check_settings(
    pruner: str, values: dict[str, Any], choices: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """Validate ``amount`` (required, 0 < amount < 1) and the keys in ``choices``.

    :param pruner: the pruner's name, for messages.
    :param values: the recipe step's settings (without ``kind`` and ``method``).
    :param choices: every other valid key and its allowed values; the first is the default.
    :raises ConfigError: an unknown key, a missing ``amount`` or a value out of range, naming
        the key, the value and what is valid.
    """
    valid = ["amount", *choices]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"{pruner} pruner: unknown setting {unknown[0]!r} "
            f"(value {values[unknown[0]]!r}); valid settings: {', '.join(valid)}"
        )
    if "amount" not in values:
        raise ConfigError(
            f"{pruner} pruner: setting 'amount' is missing; give a number with 0 < amount < 1"
        )
    amount = values["amount"]
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
        or not 0 < amount < 1
    ):
        raise ConfigError(
            f"{pruner} pruner: setting 'amount' = {amount!r} is out of range; "
            "valid: a number with 0 < amount < 1 (the fraction to remove)"
        )
    checked: dict[str, Any] = {"amount": float(amount)}
    for key, allowed in choices.items():
        value = values.get(key, allowed[0])
        if value not in allowed:
            raise ConfigError(
                f"{pruner} pruner: setting {key!r} = {value!r} is not valid; "
                f"valid: {', '.join(repr(a) for a in allowed)} (default {allowed[0]!r})"
            )
        checked[key] = value
    return checked


def count_to_remove(amount: float, total: int) -> int:
    """How many of ``total`` items (weights or channels) a fraction ``amount`` removes.

    ``floor(amount * total + 1/2)``: halves round up, unlike Python's ``round`` (banker's
    rounding, ``round(4.5) == 4``). The product is exact on the decimal the user wrote, so
    ``0.15`` of 10 is 1.5 and rounds to 2, not to the 1 that float error would give.
    """
    exact = Fraction(repr(float(amount))) * total
    return math.floor(exact + Fraction(1, 2))


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``Conv2d`` and ``Linear`` layers of ``model`` with their names, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def make_pruning_permanent(model: nn.Module) -> list[str]:
    """Fold every ``torch.nn.utils.prune`` mask into its weight and drop the reparametrisation.

    Pruned tensors keep their zeros as plain zeros; ``weight_orig``, ``weight_mask`` and the
    forward pre-hook disappear, so the model saves, exports and counts like a dense one.
    The model is changed in place.

    :returns: the ``module.parameter`` names that were made permanent.
    """
    done = []
    for name, module in model.named_modules():
        for hook in _pruning_hooks(module):
            prune.remove(module, hook._tensor_name)
            done.append(f"{name}.{hook._tensor_name}" if name else hook._tensor_name)
    return done


def dense_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with any earlier pruning masks made permanent; ``model`` is
    left as it was."""
    # deepcopy refuses a masked module's ``weight`` after a forward pass with gradients: it is
    # then a non-leaf tensor (``weight_orig * weight_mask``). The mask hook recomputes it before
    # every forward pass, so a detached copy is the same weight; the originals are put back.
    derived = [
        (module, hook._tensor_name, getattr(module, hook._tensor_name))
        for module in model.modules()
        for hook in _pruning_hooks(module)
    ]
    try:
        for module, name, tensor in derived:
            setattr(module, name, tensor.detach())
        copied = copy.deepcopy(model)
    finally:
        for module, name, tensor in derived:
            setattr(module, name, tensor)
    make_pruning_permanent(copied)
    return copied


def detach_masked_weights(model: nn.Module) -> None:
    """Replace each masked tensor's derived value (``weight_orig * weight_mask``) by a detached
    one, so that ``copy.deepcopy`` accepts the model; the next forward pass recomputes it."""
    for module in model.modules():
        for hook in _pruning_hooks(module):
            setattr(module, hook._tensor_name, getattr(module, hook._tensor_name).detach())


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (after :func:`make_pruning_permanent`, the stored ones)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def example_input(model: nn.Module, input_shape: tuple[int, int]) -> torch.Tensor:
    """A batch-1 zero input on the model's device, for tracing."""
    device = next(model.parameters(), torch.empty(0)).device
    return torch.zeros((1, *input_shape), device=device)
