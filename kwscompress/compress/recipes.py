"""Recipes in, variants out: expand every list-valued setting into its own variant.

A recipe (``[[compress.recipes]]``) is a name and an ordered list of steps. A step is a table
with ``kind`` (``prune``, ``finetune`` or ``quantize``), ``method`` (the pruner or quantizer
component; ``finetune`` has none) and settings. Any setting given as a list is swept: the
recipe expands into the cartesian product of its lists, in the order the steps and keys are
written. ``finetune`` has one setting, ``epochs`` (0 keeps the step in the variant's record but
trains nothing, so "without fine-tuning" rows stand beside "with" rows).

Each variant's settings are completed with the component's defaults
(:meth:`~kwscompress.protocols.Pruner.settings`), so a variant's record says everything that
shaped it, and its id reads like ``channel-0.5-ft3`` or ``qat-4b``.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from kwscompress.config import RecipeConfig
from kwscompress.errors import ConfigError
from kwscompress.plugins import PluginManager

STEP_KINDS = {"prune": "pruner", "quantize": "quantizer", "finetune": None}
"""Step kind -> the component kind that performs it (fine-tuning is built in)."""

NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Recipe names become file names and report labels: letters, digits, ``_``, ``.``, ``-``."""

FLOAT_ID = "float"
"""The id of the trained, uncompressed model's row."""


@dataclass
class Step:
    """One step of a variant: ``kind``, ``method`` and the complete settings."""

    kind: str
    method: str
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"kind", "method", "settings"}``."""
        return {"kind": self.kind, "method": self.method, "settings": dict(self.settings)}

    @property
    def label(self) -> str:
        """A short token for the variant id: ``0.5``, ``ft3``, ``4b``, ``w4a8``."""
        if self.kind == "finetune":
            return f"ft{self.settings['epochs']}"
        if self.kind == "quantize":
            weight = self.settings.get("weight_bits", self.settings.get("bits"))
            act = self.settings.get("act_bits", weight)
            text = f"{weight}b" if weight == act else f"w{weight}a{act}"
            return text if self.settings.get("per_channel", True) else text + "-pt"
        amount = self.settings.get("amount")
        return f"{amount:g}" if isinstance(amount, int | float) else self.method


@dataclass
class VariantSpec:
    """A recipe with one value per setting: what a variant job runs."""

    id: str
    recipe: str
    steps: list[Step] = field(default_factory=list)

    @property
    def training_epochs(self) -> int:
        """Epochs of training over all steps (fine-tuning, quantization-aware training): how the
        sweep guesses which variants take longest."""
        return sum(int(step.settings.get("epochs", 0)) for step in self.steps)

    @property
    def weight_bits(self) -> int:
        """The last quantize step's weight bits, or 32 for a float variant."""
        bits = 32
        for step in self.steps:
            if step.kind == "quantize":
                bits = int(step.settings.get("weight_bits", step.settings.get("bits", 8)))
        return bits


def expand_recipes(
    recipes: list[RecipeConfig], pm: PluginManager, source: str = "[compress]"
) -> list[VariantSpec]:
    """Every variant of every recipe, ids unique, settings complete and checked.

    :raises ConfigError: a recipe without a name or steps, an unknown step kind or method, a
        bad setting (the component's own message), or two recipes with one name.
    """
    variants: list[VariantSpec] = []
    names: set[str] = set()
    for index, recipe in enumerate(recipes):
        where = f"{source} recipes[{index}]"
        if not NAME_RULE.fullmatch(recipe.name):
            raise ConfigError(
                f"{where}: recipe name {recipe.name!r} must be 1-64 letters, digits, '_', '.' "
                "or '-', starting with a letter or digit"
            )
        if recipe.name in names or recipe.name == FLOAT_ID:
            raise ConfigError(f"{where}: recipe name {recipe.name!r} is used twice or reserved")
        names.add(recipe.name)
        if not recipe.steps:
            raise ConfigError(f"{where} ({recipe.name}): a recipe needs at least one step")
        choices = [
            _step_choices(step, f"{where}.steps[{i}]") for i, step in enumerate(recipe.steps)
        ]
        for combination in itertools.product(*choices):
            steps = [
                _complete(kind, method, settings, pm, f"{where} ({recipe.name})")
                for kind, method, settings in combination
            ]
            variants.append(VariantSpec(_variant_id(recipe.name, steps), recipe.name, steps))
    _make_ids_unique(variants)
    return variants


def _step_choices(step: dict[str, Any], where: str) -> list[tuple[str, str, dict[str, Any]]]:
    kind = step.get("kind")
    if kind not in STEP_KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(STEP_KINDS)}, got {kind!r}")
    method = step.get("method", "finetune" if kind == "finetune" else None)
    if not isinstance(method, str) or not method:
        raise ConfigError(f"{where}: a {kind} step needs a method (the component's name)")
    settings = {k: v for k, v in step.items() if k not in ("kind", "method")}
    keys = list(settings)
    values = [v if isinstance(v, list) else [v] for v in settings.values()]
    for key, options in zip(keys, values, strict=True):
        if not options:
            raise ConfigError(f"{where}: {key} is an empty list; give at least one value")
    return [
        (kind, method, dict(zip(keys, combination, strict=True)))
        for combination in itertools.product(*values)
    ]


def _complete(
    kind: str, method: str, settings: dict[str, Any], pm: PluginManager, where: str
) -> Step:
    if kind == "finetune":
        unknown = sorted(set(settings) - {"epochs"})
        if unknown:
            raise ConfigError(f"{where}: unknown finetune key {unknown[0]!r}; valid keys: epochs")
        epochs = settings.get("epochs", 3)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ConfigError(f"{where}: finetune epochs must be an integer >= 0, got {epochs!r}")
        return Step(kind, "finetune", {"epochs": epochs})
    component = pm.component(STEP_KINDS[kind], method)
    try:
        complete = component.settings(dict(settings))
    except ConfigError as exc:
        raise ConfigError(f"{where}, {kind} {method!r}: {exc}") from None
    return Step(kind, method, complete)


def _variant_id(recipe: str, steps: list[Step]) -> str:
    return "-".join([recipe, *(step.label for step in steps)])


def _make_ids_unique(variants: list[VariantSpec]) -> None:
    seen: dict[str, int] = {}
    for variant in variants:
        count = seen.get(variant.id, 0)
        seen[variant.id] = count + 1
        if count:
            variant.id = f"{variant.id}-{count + 1}"


def select_variants(patterns: list[str], ids: list[str], table: str) -> list[str]:
    """The ids matching any of ``patterns`` (exact ids or shell-style ``channel-*-ft3``), in
    ``ids`` order.

    :raises ConfigError: a pattern that matches no variant, naming ``table`` and the ids.
    """
    for pattern in patterns:
        if not fnmatch.filter(ids, pattern):
            raise ConfigError(
                f"[{table}] variants: {pattern!r} matches no variant of the sweep; "
                f"variants: {', '.join(ids)}"
            )
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
