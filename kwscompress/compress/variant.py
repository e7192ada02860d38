"""Run one variant: apply its steps to the baseline, measure it, hand back its row and model.

This is the task an executor runs, possibly in another process or on another machine, so it
takes only picklable inputs: :class:`SweepPayload` (shared by every variant: baseline weights,
features, settings) and a :class:`VariantJob`. Components are looked up by name in the worker's
plugin manager (every installed plugin), or in the caller's own manager when the job runs in
the calling process (which lets tests use ad-hoc plugins).
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kwscompress.compress.context import StepContext
from kwscompress.compress.recipes import STEP_KINDS, VariantSpec
from kwscompress.config import TrainConfig
from kwscompress.errors import component_failure
from kwscompress.estimate import weight_bytes
from kwscompress.plugins import PluginManager, get_plugin_manager
from kwscompress.profile import forward_times_ms
from kwscompress.rejection import RejectionProbes, score_probes
from kwscompress.train import LabeledFeatures, evaluate, set_seed

LATENCY_RUNS = 50
"""Timed batch-1 forward passes per variant; the median is kept."""
LATENCY_WARMUP = 5
"""Untimed passes before them."""
ROW_FORMAT = 4
"""Version of how the core makes and measures a variant, part of every variant's cache key:
raise it when a row gains or changes a measurement or a step's rules change (3: fine-tuning
keeps its start when no epoch beats it; 4: quantized models are measured with TFLM's rounding),
so rows cached before are made again."""


@dataclass
class SweepPayload:
    """What every variant of a sweep needs; sent to each worker once."""

    model_name: str
    baseline_state: dict[str, torch.Tensor]
    labels: list[str]
    splits: dict[str, LabeledFeatures]
    """``training`` (possibly with augmented copies), ``validation``, ``testing``."""
    train_config: TrainConfig
    finetune_learning_rate: float
    estimator: str
    probes: RejectionProbes | None = None
    """The rejection probes every row is scored on (none: rows without rejection records)."""
    plugin_manager: PluginManager | None = field(default=None, compare=False)
    """The caller's manager; never pickled (a worker loads its own)."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["plugin_manager"] = None
        return state

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(frames, bins)`` of one clip."""
        frames, bins = self.splits["validation"].features.shape[-2:]
        return int(frames), int(bins)


@dataclass
class VariantJob:
    """One variant to run: its spec and the key its results are cached under."""

    spec: VariantSpec
    key: str


@dataclass
class VariantOutcome:
    """A finished variant: its row and, when it succeeded, its model serialised by torch."""

    row: dict[str, Any]
    model_bytes: bytes | None = None


class StepFailed(Exception):
    """A component raised; carries the row's ``error`` record naming it."""

    def __init__(self, error: dict[str, str]):
        super().__init__(error["message"])
        self.error = error


def run_variant(payload: SweepPayload, job: VariantJob) -> VariantOutcome:
    """Apply the job's steps and measure the result; a failing component gives a failed row.

    The variant runs on one torch thread wherever it runs: float reductions split differently
    across threads, so the thread count would otherwise change the numbers of fine-tuned and
    quantized variants between executors.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_variant(payload, job)
    finally:
        torch.set_num_threads(previous_threads)


def _run_variant(payload: SweepPayload, job: VariantJob) -> VariantOutcome:
    started = time.perf_counter()
    spec = job.spec
    row = new_row(spec, job.key)
    try:
        model, skeleton = _apply_steps(payload, spec, row)
        row.update(measure(model, skeleton, payload, spec.weight_bits))
        buffer = io.BytesIO()
        torch.save(model, buffer)
        model_bytes: bytes | None = buffer.getvalue()
    except StepFailed as exc:
        row.update(status="failed", error=exc.error)
        model_bytes = None
    except Exception as exc:  # the core's own failure: still one failed row, not a dead sweep
        error = component_failure("kwscompress", "compress", exc)
        row.update(status="failed", error={**error, "traceback": traceback.format_exc()})
        model_bytes = None
    row["seconds"] = round(time.perf_counter() - started, 3)
    return VariantOutcome(row, model_bytes)


def new_row(spec: VariantSpec, key: str) -> dict[str, Any]:
    """The fields every row starts with (the float model's spec has no steps)."""
    return {
        "id": spec.id,
        "recipe": spec.recipe,
        "key": key,
        "status": "ok",
        "error": None,
        "steps": [step.as_dict() for step in spec.steps],
        "weight_bits": spec.weight_bits,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def measure(
    model: torch.nn.Module, skeleton: torch.nn.Module, payload: SweepPayload, weight_bits: int
) -> dict[str, Any]:
    """Accuracy per split, rejection, sizes and host latency of a variant (or the float model).

    ``skeleton`` is the float model the variant's shape comes from (the model itself for float
    and pruned variants, the model before quantization otherwise): parameters, MACs and
    nonzero weights are counted on it, since quantization keeps the shape.
    """
    reports = {
        split: evaluate(model, data.first_copy, payload.labels, split)
        for split, data in payload.splits.items()
    }
    estimator = _components(payload).component("estimator", payload.estimator)
    estimate = estimator.estimate(skeleton, (1, *payload.input_shape))
    parameters = sum(p.numel() for p in skeleton.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in skeleton.parameters())
    found = {
        "accuracy": {split: report["accuracy"] for split, report in reports.items()},
        "parameters": parameters,
        "nonzero_parameters": nonzero,
        "macs": int(estimate["total"]["macs"]),
        "weight_bytes": weight_bytes(skeleton, weight_bits),
        "host_latency_ms": host_latency_ms(model, payload.input_shape),
    }
    if payload.probes is not None:
        truth = payload.splits["testing"].labels
        found.update(score_probes(model, payload.probes, truth, reports["testing"]["predicted"]))
    return found


def host_latency_ms(model: torch.nn.Module, input_shape: tuple[int, int]) -> float:
    """Median batch-1 forward time on one CPU thread, in milliseconds."""
    example = torch.randn((1, *input_shape), generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    was_training = model.training
    model.eval()
    try:
        times = forward_times_ms(model, example, LATENCY_RUNS, LATENCY_WARMUP)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    return round(statistics.median(times), 4)


def baseline_model(payload: SweepPayload) -> torch.nn.Module:
    """The trained float model, rebuilt from its weights."""
    spec = _components(payload).component("model", payload.model_name)
    model = spec.build(payload.input_shape, len(payload.labels))
    model.load_state_dict(payload.baseline_state)
    model.eval()
    return model


def _apply_steps(
    payload: SweepPayload, spec: VariantSpec, row: dict[str, Any]
) -> tuple[torch.nn.Module, torch.nn.Module]:
    pm = _components(payload)
    set_seed(payload.train_config.seed)
    model = baseline_model(payload)
    skeleton = model
    context = StepContext(
        train=payload.splits["training"],
        validation=payload.splits["validation"],
        labels=payload.labels,
        train_config=payload.train_config,
        finetune_learning_rate=payload.finetune_learning_rate,
        seed=payload.train_config.seed,
    )
    for index, step in enumerate(spec.steps):
        if step.kind == "finetune":
            if step.settings["epochs"] > 0:
                row["steps"][index]["info"] = context.finetune(model, step.settings["epochs"])
            continue
        kind = STEP_KINDS[step.kind]
        registered = pm.components(kind)[step.method]
        call = registered.component.prune if step.kind == "prune" else registered.component.quantize
        try:
            result = call(model, context, **step.settings)
        except Exception as exc:
            component = f"{kind} {step.method!r}"
            raise StepFailed(component_failure(registered.plugin, component, exc)) from exc
        if step.kind == "quantize":
            skeleton = model
        row["steps"][index]["info"] = _json_ready(result.info)
        model = result.model
        if step.kind != "quantize":
            skeleton = model
    make_pruning_permanent(skeleton)
    make_pruning_permanent(model)
    model.eval()
    return model, skeleton


def make_pruning_permanent(model: torch.nn.Module) -> None:
    """Fold ``torch.nn.utils.prune`` masks into the weights, so zeros stay and hooks go.

    Unstructured pruners leave their masks on the modules so that fine-tuning keeps the zeros;
    once every step has run, the variant's weights are plain tensors again.
    """
    from torch.nn.utils import prune

    for module in model.modules():
        pruned = [k for k, _ in module.named_parameters(recurse=False) if k.endswith("_orig")]
        for name in pruned:
            prune.remove(module, name.removesuffix("_orig"))


def _components(payload: SweepPayload) -> PluginManager:
    if payload.plugin_manager is None:
        payload.plugin_manager = get_plugin_manager()
    return payload.plugin_manager


def _json_ready(info: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, np.generic | torch.Tensor):
            return value.item() if value.ndim == 0 else value.tolist()
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value

    return convert(copy.deepcopy(info))
