"""The compress stage: every variant of the sweep, run by an executor, cached by key.

A variant's key hashes its complete steps, the baseline's weights, the feature cache key, the
fine-tuning settings and the versions of the components it uses. Finished variants are stored
under ``<cache>/variants/<key>/`` (``row.json`` and ``model.pt``) the moment they finish, so a
sweep that is interrupted (Ctrl-C, SIGKILL) or rerun evaluates only the variants that are
missing. Rows keep the order of the recipes whatever order they finish in; the float model is
the first row. Each row is also written to ``results.json`` as it arrives, and its model to
``<run>/variants/<id>.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kwscompress import __version__
from kwscompress.compress.recipes import FLOAT_ID, VariantSpec, expand_recipes
from kwscompress.compress.variant import (
    ROW_FORMAT,
    SweepPayload,
    VariantJob,
    VariantOutcome,
    measure,
    new_row,
    run_variant,
)
from kwscompress.config import Config, RecipeConfig
from kwscompress.errors import component_failure
from kwscompress.plugins import PluginManager
from kwscompress.progress import progress_bar
from kwscompress.rejection import RejectionProbes
from kwscompress.run import Run, atomic_dir, atomic_path, remove_stale_temps, write_json
from kwscompress.stages.features import FeatureSets

VariantCallback = Callable[[dict[str, Any]], None]
"""Called with each row as it is recorded (the pipeline tells the lifecycle hooks)."""


def compress(
    pm: PluginManager,
    config: Config,
    recipes: list[RecipeConfig],
    sets: FeatureSets,
    baseline: torch.nn.Module,
    run: Run,
    cache_dir: Path,
    on_row: VariantCallback,
    probes: RejectionProbes | None = None,
) -> dict[str, Any]:
    """Run the sweep of ``recipes`` and return the stage summary.

    With ``probes``, every row (the float model's too) records the variant's rejection,
    robustness and held-out voices as the evaluate stage does for the trained model.

    ``run.results["variants"]`` holds the rows when this returns (and holds every finished row
    while it runs).
    """
    specs = expand_recipes(recipes, pm)
    executor = pm.component("executor", config.sweep.executor)
    payload = SweepPayload(
        model_name=config.model.name,
        baseline_state={k: v.detach().cpu().clone() for k, v in baseline.state_dict().items()},
        labels=sets.labels,
        splits=sets.splits,
        train_config=config.train,
        finetune_learning_rate=config.compress.finetune_learning_rate,
        estimator=config.estimate.estimator,
        probes=probes,
        plugin_manager=pm,
    )
    baseline_hash = state_hash(payload.baseline_state)
    store = VariantStore(cache_dir / "variants")
    models_dir = run.subdir("variants")

    rows: list[dict[str, Any] | None] = [None] * (len(specs) + 1)
    rows[0] = float_row(payload, baseline, baseline_hash)
    _save_model(models_dir, FLOAT_ID, _model_bytes(baseline))

    def record(index: int, row: dict[str, Any]) -> None:
        rows[index] = row
        run.record("variants", [r for r in rows if r is not None])
        on_row(row)

    record(0, rows[0])
    jobs: list[tuple[int, VariantJob]] = []
    for index, spec in enumerate(specs, start=1):
        key = variant_key(spec, baseline_hash, sets.meta["cache_key"], config, pm)
        cached = store.load(key)
        if cached is not None:
            row, model_bytes = cached
            row.update(id=spec.id, recipe=spec.recipe, cached=True)
            if model_bytes is not None:
                _save_model(models_dir, spec.id, model_bytes)
            record(index, row)
        else:
            jobs.append((index, VariantJob(spec, key)))

    # The longest variants first (most training epochs; ties keep the recipe order), so that
    # none of them starts last while the other workers sit idle: 69 -> 62 s for the demo's
    # sweep on two workers. Rows keep their recipe order whatever order they finish in.
    jobs.sort(key=lambda item: -item[1].spec.training_epochs)
    failed = 0
    with progress_bar(f"Compressing ({len(jobs)} to run)", len(jobs)) as advance:

        def done(position: int, outcome: Any) -> None:
            nonlocal failed
            index, job = jobs[position]
            if isinstance(outcome, BaseException):
                outcome = _executor_failure(job, executor, outcome)
            row = outcome.row
            row["cached"] = False
            if row["status"] == "ok" and outcome.model_bytes is not None:
                store.save(job.key, row, outcome.model_bytes)
                _save_model(models_dir, job.spec.id, outcome.model_bytes)
            else:
                failed += 1
            record(index, row)
            left = sum(r is None for r in rows)
            advance(1, status=f"{failed} failed, {left} to go")

        executor.run(
            run_variant,
            payload,
            [job for _, job in jobs],
            dataclasses.asdict(config.sweep),
            done,
        )
    return {
        "variants": len(specs) + 1,
        "evaluated": len(jobs),
        "cached": len(specs) - len(jobs),
        "failed": failed,
        "executor": executor.name,
        "baseline_hash": baseline_hash,
    }


def float_row(
    payload: SweepPayload, baseline: torch.nn.Module, baseline_hash: str
) -> dict[str, Any]:
    """The trained model's row: the first of the variant table."""
    started = time.perf_counter()
    row = new_row(VariantSpec(FLOAT_ID, FLOAT_ID), baseline_hash)
    row.update(measure(baseline, baseline, payload, 32), cached=False)
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def variant_key(
    spec: VariantSpec, baseline_hash: str, feature_key: str, config: Config, pm: PluginManager
) -> str:
    """Hash of everything a variant's result depends on."""
    versions = {}
    for step in spec.steps:
        if step.kind != "finetune":
            kind = "pruner" if step.kind == "prune" else "quantizer"
            registered = pm.components(kind)[step.method]
            versions[f"{kind}:{step.method}"] = f"{registered.plugin}=={registered.version}"
    blob = json.dumps(
        {
            "steps": [step.as_dict() for step in spec.steps],
            "baseline": baseline_hash,
            "features": feature_key,
            "train": dataclasses.asdict(config.train),
            "finetune_learning_rate": config.compress.finetune_learning_rate,
            "estimator": config.estimate.estimator,
            "versions": versions,
            "kwscompress": __version__,
            "row_format": ROW_FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state dict's names, shapes and values."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:24]


class VariantStore:
    """Finished variants by key: ``<root>/<key>/row.json`` and ``model.pt``.

    A folder is complete or absent: it is written under a temporary name and renamed into
    place. When two sweeps finish the same variant together, the second keeps the first's.
    """

    def __init__(self, root: Path):
        self.root = root
        remove_stale_temps(root)  # folders a killed sweep left half-written

    def load(self, key: str) -> tuple[dict[str, Any], bytes | None] | None:
        """The stored row and model bytes, or None when the variant has not finished."""
        folder = self.root / key
        try:
            row = json.loads((folder / "row.json").read_text("utf-8"))
            model = (folder / "model.pt").read_bytes()
        except (OSError, ValueError):
            return None
        return row, model

    def save(self, key: str, row: dict[str, Any], model_bytes: bytes) -> None:
        """Store a finished variant."""
        with atomic_dir(self.root / key) as tmp:
            (tmp / "model.pt").write_bytes(model_bytes)
            write_json(tmp / "row.json", row)


def load_variant_model(run_dir: Path, variant_id: str) -> torch.nn.Module:
    """The model a sweep stored for ``variant_id`` in the run directory."""
    path = run_dir / "variants" / f"{variant_id}.pt"
    model = torch.load(path, weights_only=False, map_location="cpu")
    model.eval()
    return model


def _executor_failure(job: VariantJob, executor: Any, exc: BaseException) -> VariantOutcome:
    error = component_failure(getattr(executor, "name", "executor"), "executor", exc)
    row = {**new_row(job.spec, job.key), "status": "failed", "error": error}
    return VariantOutcome(row, None)


def _model_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _save_model(folder: Path, variant_id: str, model_bytes: bytes) -> None:
    with atomic_path(folder / f"{variant_id}.pt") as tmp:
        tmp.write_bytes(model_bytes)
