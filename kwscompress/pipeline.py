"""The Pipeline: config + plugin manager + run directory, one method per stage.

Each stage method can be called alone; one that needs an earlier stage's output runs that stage
first if it has not run yet. Every stage records its summary in ``results.json`` as soon as it
finishes and tells the lifecycle hooks it started and finished.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kwscompress.boards import get_board
from kwscompress.config import Config
from kwscompress.errors import KwsError, PluginError, Terminated
from kwscompress.plugins import PluginManager, get_plugin_manager
from kwscompress.run import Run, check_folder_path, environment
from kwscompress.spawned import refuse_while_a_helper_starts

if TYPE_CHECKING:
    import torch

    from kwscompress.data.dataset import DatasetIndex
    from kwscompress.rejection import RejectionProbes
    from kwscompress.stages.features import FeatureSets
    from kwscompress.stages.stream import BuiltStream


def default_cache_dir() -> Path:
    """``$KWSCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/kwscompress``, else ``~/.cache/...``."""
    if os.environ.get("KWSCOMPRESS_CACHE"):
        return Path(os.environ["KWSCOMPRESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kwscompress"


class Pipeline:
    """Train, evaluate and analyse a keyword spotter, stage by stage or all at once.

    :param config: the configuration; ``None`` uses the built-in defaults.
    :param plugin_manager: plugins to use; ``None`` loads every installed plugin.
    :param run_dir: the run directory; ``None`` means ``config.run.out_dir / config.run.name``.
    """

    def __init__(
        self,
        config: Config | None = None,
        plugin_manager: PluginManager | None = None,
        run_dir: str | Path | None = None,
    ):
        refuse_while_a_helper_starts("a kwscompress Pipeline")
        self.config = config or Config()
        self.pm = plugin_manager or get_plugin_manager()
        self._run_dir = Path(run_dir) if run_dir else None
        self._run: Run | None = None
        self.index: DatasetIndex | None = None
        self.feature_sets: FeatureSets | None = None
        self.model: torch.nn.Module | None = None
        self._probes: RejectionProbes | None = None
        self._streams: dict[str, BuiltStream] = {}
        # Check every component name now, so a typo fails before minutes of work.
        self.pm.component("dataset", self.config.data.source)
        self.pm.component("feature_extractor", self.config.features.name)
        self.pm.component("model", self.config.model.name)
        self.pm.component("estimator", self.config.estimate.estimator)
        get_board(self.config.estimate.board)
        # A file where a folder must go fails now, not after minutes of training.
        check_folder_path(self.run_dir, "run directory (run.out_dir / run.name, or --out)")
        check_folder_path(self.cache_dir, "cache directory (run.cache_dir or KWSCOMPRESS_CACHE)")
        self._check_sweep()

    @classmethod
    def from_toml(cls, path: str | Path, **kwargs: Any) -> Pipeline:
        """A pipeline configured by the TOML file at ``path``."""
        return cls(Config.from_toml(path), **kwargs)

    @property
    def run_dir(self) -> Path:
        """Where results and artifacts go."""
        return self._run_dir or Path(self.config.run.out_dir) / self.config.run.name

    @property
    def cache_dir(self) -> Path:
        """Where datasets and features are cached."""
        return Path(self.config.run.cache_dir) if self.config.run.cache_dir else default_cache_dir()

    @property
    def run_record(self) -> Run:
        """The run directory object (created on first use)."""
        if self._run is None:
            self._run = Run(self.run_dir)
        return self._run

    def _stage_failed(self, name: str, exc: Exception) -> NoReturn:
        """Log the traceback, name the plugin at fault, record the failure, and raise.

        Finished stages stay in ``results.json``; ``failed`` says which stage stopped the run.
        """
        run = self.run_record
        run.log.error("stage %s failed:\n%s", name, "".join(traceback.format_exception(exc)))
        blamed = self.pm.blame(exc)
        if blamed is not None:
            blamed.log = run.log_path
        failure = blamed or exc
        if "failed" not in run.results:
            message = str(failure) if isinstance(failure, KwsError) else f"{exc!r}"
            record = {"stage": name, "message": message}
            if isinstance(failure, PluginError):
                record.update(plugin=failure.plugin, component=failure.component)
            run.record("failed", record)
        if blamed is not None:
            raise blamed from exc
        raise exc

    @contextmanager
    def _stage(self, name: str) -> Iterator[dict[str, Any]]:
        run = self.run_record
        errors = run.results.setdefault("plugin_errors", [])
        self.pm.notify("kws_stage_started", errors, stage=name, run=run)
        run.log.info("stage %s started", name)
        started = time.perf_counter()
        summary: dict[str, Any] = {}
        try:
            yield summary
        except Exception as exc:
            self._stage_failed(name, exc)  # raises
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM on the command line
            reason = "terminated" if isinstance(exc, Terminated) else "interrupted"
            run.log.warning("stage %s %s", name, reason)
            if "failed" not in run.results:
                run.record("failed", {"stage": name, "message": reason})
            raise
        summary["seconds"] = round(time.perf_counter() - started, 3)
        run.record(name, summary)
        run.log.info("stage %s finished in %.1f s", name, summary["seconds"])
        self.pm.notify("kws_stage_finished", errors, stage=name, run=run, summary=summary)
        run.save()

    def load_data(self) -> DatasetIndex:
        """Prepare the dataset (synthesizing it if needed) and choose each split's clips."""
        from kwscompress.stages.load_data import load_data

        source = self.pm.component("dataset", self.config.data.source)
        with self._stage("data") as summary:
            self.index, found = load_data(source, self.config.data, self.cache_dir)
            summary.update(found)
        return self.index

    def features(self, index: DatasetIndex | None = None) -> FeatureSets:
        """Compute (or load from the cache) the features of every split."""
        from kwscompress.stages.features import compute_features

        index = index or self.index or self.load_data()
        name = self.config.features.name
        extractor = self.pm.component("feature_extractor", name)
        version = self._plugin_version("feature_extractor", name)
        with self._stage("features") as summary:
            sets, cached = compute_features(
                index, self.config.data, self.config.features, extractor, version, self.cache_dir
            )
            summary.update(
                extractor=name,
                settings=sets.meta["settings"],
                shape=list(sets.shape),
                cache_key=sets.meta["cache_key"],
                cache_hit=cached,
                words=sets.meta["words"],
            )
            data = self.run_record.results.get("data", {})
            for key in ("split_summary", "skipped_files", "converted_files"):
                data[key] = sets.meta[key]
            data["skipped_count"] = len(sets.meta["skipped_files"])
            self.run_record.record("data", data)
        self.feature_sets = sets
        return sets

    def train(self, feature_sets: FeatureSets | None = None) -> torch.nn.Module:
        """Train the configured model; the best-validation weights are kept and returned."""
        from kwscompress.stages.training import train

        sets = feature_sets or self.feature_sets or self.features()
        spec = self.pm.component("model", self.config.model.name)
        checkpoint = self.run_record.subdir("checkpoints") / f"{spec.name}.pt"
        with self._stage("train") as summary:
            self.model, found = train(spec, sets, self.config.train, checkpoint)
            found["checkpoint"] = str(checkpoint.relative_to(self.run_dir))
            summary.update(found)
        return self.model

    def load_model(self, checkpoint: str | Path | None = None) -> torch.nn.Module:
        """The configured model with the weights of ``checkpoint``, in eval mode; the later
        stages (evaluate, stream, compress, ...) then use it as they would a trained one.

        :param checkpoint: a ``.pt`` file of weights (a ``state_dict``); ``None`` means this
            run's own, ``checkpoints/<model>.pt`` as :meth:`train` writes it.
        :raises KwsError: the file is missing, is not a checkpoint, or holds the weights of
            another model (another ``[model] name``, classes or feature shape).
        """
        import torch

        name = self.config.model.name
        path = Path(checkpoint or self.run_dir / "checkpoints" / f"{name}.pt")
        if not path.is_file():
            raise KwsError(f"no checkpoint at {path}: train the model first or give a .pt file")
        model = self._build_model()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # what torch.load raises on other bytes varies with the bytes
            raise KwsError(f"{path} is not a PyTorch checkpoint ({exc!r})") from None
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            classes = 2 + len(self.config.data.wanted_words)
            first = str(exc).strip().splitlines()[-1].strip()
            raise KwsError(
                f"{path} does not hold the weights of the configured model {name!r} with "
                f"{classes} classes and {self._input_shape()} features: {first}"
            ) from None
        self.model = model.eval()
        return self.model

    def evaluate(
        self, model: torch.nn.Module | None = None, feature_sets: FeatureSets | None = None
    ) -> dict[str, Any]:
        """Per-class accuracy on every split, rejection, held-out voices and the real clips."""
        from kwscompress.stages.evaluation import evaluate_model

        sets = feature_sets or self.feature_sets or self.features()
        model = model or self.model or self.train(sets)
        extractor = self.pm.component("feature_extractor", self.config.features.name)
        with self._stage("evaluate") as summary:
            summary["model"] = self.config.model.name
            summary.update(
                evaluate_model(
                    model,
                    sets,
                    extractor,
                    self.config.features,
                    self.config.data,
                    self.rejection_probes(sets),
                )
            )
        return summary

    def rejection_probes(self, feature_sets: FeatureSets | None = None) -> RejectionProbes:
        """The clips the evaluate stage and the sweep measure rejection on, featurized once.

        Kept for the pipeline's lifetime and made again only for other feature sets.
        """
        from kwscompress.data.dataset import synth_manifest
        from kwscompress.rejection import collect_probes

        sets = feature_sets or self.feature_sets or self.features()
        if self._probes is None or self._probes.feature_key != sets.meta.get("cache_key", ""):
            root = Path(self.run_record.results.get("data", {}).get("root", ""))
            self._probes = collect_probes(
                sets,
                self.pm.component("feature_extractor", self.config.features.name),
                self.config.features,
                self.config.data,
                synth_manifest(root) if root.name else None,
                root if root.name else None,
            )
        return self._probes

    def stream(
        self, model: torch.nn.Module | None = None, feature_sets: FeatureSets | None = None
    ) -> dict[str, Any]:
        """The streaming test: minutes of speech run as the device runs it (see ``[stream]``).

        Builds validation and test streams from the dataset's own speakers, runs the model on
        every new slice, feeds the command recognizer, tunes its threshold on the validation
        stream for ``[stream] target_false_accepts_per_hour`` and scores the test stream.
        """
        from kwscompress.stages.stream import run_stream_stage

        sets = feature_sets or self.feature_sets or self.features()
        model = model or self.model or self.train(sets)
        extractor = self.pm.component("feature_extractor", self.config.features.name)
        root = Path(self.run_record.results["data"]["root"])
        with self._stage("stream") as summary:
            summary.update(
                run_stream_stage(
                    self.config,
                    extractor,
                    model,
                    root,
                    sets.labels,
                    self.run_record,
                    built=self._streams,
                )
            )
        return summary

    def estimate(
        self, model: torch.nn.Module | None = None, board: str | None = None
    ) -> dict[str, Any]:
        """Parameters, MACs, FLOPs, memory and the flash/RAM fit on a board (estimates).

        Uses the trained model when there is one; counts do not depend on the weights, so
        otherwise a freshly built model of the configured architecture is analysed.
        """
        from kwscompress.estimate import estimate_model

        config = self.config.estimate
        model = model or self.model or self._build_model()
        estimator = self.pm.component("estimator", config.estimator)
        with self._stage("estimate") as summary:
            summary.update(
                estimate_model(
                    model,
                    (1, *self._input_shape()),
                    board=board or config.board,
                    bits=config.bits,
                    estimator=estimator,
                    model_name=self.config.model.name,
                )
            )
        return summary

    def profile(self, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """Batch-1 host latency (median over many runs) and self time per operator."""
        from kwscompress.profile import profile_model

        model = model or self.model or self._build_model()
        with self._stage("profile") as summary:
            summary.update(
                profile_model(
                    model,
                    (1, *self._input_shape()),
                    runs=self.config.profile.runs,
                    warmup=self.config.profile.warmup,
                    threads=self.config.profile.threads,
                )
            )
        return summary

    def compress(
        self, model: torch.nn.Module | None = None, feature_sets: FeatureSets | None = None
    ) -> list[dict[str, Any]]:
        """Run the compression sweep of ``[compress]``; return the variant rows.

        The float model is the first row; every recipe variant follows in config order. Finished
        variants come from the variant cache, so an interrupted sweep resumes where it stopped.
        """
        from kwscompress.stages.compress import compress

        sets = feature_sets or self.feature_sets or self.features()
        model = model or self.model or self.train(sets)
        run = self.run_record
        errors = run.results.setdefault("plugin_errors", [])

        def tell(row: dict[str, Any]) -> None:
            self.pm.notify("kws_variant_finished", errors, variant=row["id"], metrics=row, run=run)

        recipes = self.config.compress.recipes if self.config.compress.enabled else []
        with self._stage("compress") as summary:
            summary.update(
                compress(
                    self.pm,
                    self.config,
                    recipes,
                    sets,
                    model,
                    run,
                    self.cache_dir,
                    on_row=tell,
                    probes=self.rejection_probes(sets),
                )
            )
        return run.results["variants"]

    def export(self, variants: list[str] | None = None) -> dict[str, Any]:
        """Export variants (default ``[export] variants``) with ``[export] exporters``.

        Each exporter's record lands on the variant's row under ``export``; measured flash
        (``tflite_bytes``) and RAM (``arena_bytes``) under ``deploy``.
        """
        from kwscompress.stages.export import export_variants

        sets = self.feature_sets or self.features()
        if "variants" not in self.run_record.results:
            self.compress()
        with self._stage("export") as summary:
            summary.update(
                export_variants(
                    self.pm,
                    variants if variants is not None else self.export_ids,
                    self.config.export.exporters,
                    sets,
                    self.run_record,
                    self.config.export.workers or os.cpu_count() or 1,
                )
            )
        return summary

    def mcu(self) -> dict[str, Any]:
        """Flash, RAM and emulated latency of every exported int8 variant (``[mcu]``)."""
        from kwscompress.stages.mcu import measure_variants

        sets = self.feature_sets or self.features()
        board = get_board(self.config.estimate.board)
        with self._stage("mcu") as summary:
            summary.update(
                measure_variants(
                    self.pm,
                    self.config.mcu.runtime,
                    self.run_record,
                    sets,
                    board,
                    self.config.mcu.emulate_clips,
                )
            )
        return summary

    def deploy(
        self,
        variant: str | None = None,
        backend: str | None = None,
        out: str | Path | None = None,
    ) -> dict[str, Path]:
        """Render firmware for an exported variant (default: each of ``[deploy] variants``).

        :param out: the project folder; default ``<run>/firmware/<variant>``.
        :returns: the rendered files by kind (of the last variant when several are rendered).
        """
        from kwscompress.stages.deploy import (
            firmware_inputs,
            firmware_record,
            render_firmware,
        )

        run = self.run_record
        backend = backend or self.config.deploy.backend
        chosen = [variant] if variant else self.deploy_ids
        files: dict[str, Path] = {}
        with self._stage("deploy") as summary:
            for variant_id in chosen:
                self._stream_variant(variant_id)
                inputs = firmware_inputs(run.results, run.path, variant_id, self.config.recognizer)
                folder = Path(out) if out else run.subdir("firmware") / variant_id
                files = render_firmware(
                    self.pm,
                    backend,
                    inputs,
                    folder,
                    profile=self.config.deploy.profile,
                    runtime=self.config.deploy.runtime,
                )
                row = next(r for r in run.results["variants"] if r["id"] == variant_id)
                row.setdefault("deploy", {}).update(firmware_record(files, folder))
                row["deploy"]["recognizer_source"] = inputs.recognizer_source
                summary[variant_id] = {"backend": backend, "dir": str(folder)}
        return files

    def _stream_variant(self, variant_id: str) -> None:
        """Tune the recognizer for a variant about to be deployed, on its own streams.

        The variant's scores are not the trained model's (a quantized model is more or less
        sure of the same words), so the threshold chosen for the trained model need not suit
        it. The scores are those of the ``.tflite`` file its firmware embeds, as TensorFlow
        Lite runs it. Runs when the stream stage ran in this run, the variant has a verified
        TFLite export and the dataset is still there; the record goes to the variant's row as
        ``stream``.
        """
        from kwscompress.stages.stream import run_stream_stage
        from kwscompress.stream.runner import tflite_scorer

        results = self.run_record.results
        row = next((r for r in results.get("variants") or [] if r.get("id") == variant_id), None)
        tflite = ((row or {}).get("export") or {}).get("tflite") or {}
        root = Path((results.get("data") or {}).get("root") or "")
        if (
            row is None
            or "stream" in row
            or not self.config.stream.enabled
            or not results.get("stream")
            or tflite.get("status") != "ok"
            or not (root.name and root.is_dir())
        ):
            return
        labels = (results.get("evaluate") or {}).get("labels") or results["data"]["labels"]
        row["stream"] = run_stream_stage(
            self.config,
            self.pm.component("feature_extractor", self.config.features.name),
            tflite_scorer(self.run_dir / tflite["dir"] / tflite["files"]["tflite"]),
            root,
            labels,
            built=self._streams,
        )
        self.run_record.record("variants", results["variants"])

    def report(self) -> dict[str, Path]:
        """Write ``report.html`` and ``report.md`` from what the run has recorded so far."""
        from kwscompress.report import write_report

        with self._stage("report") as summary:
            paths = write_report(self.run_record, plugin_manager=self.pm)
            summary.update(self.run_record.results["report"])  # files, sections, errors
        return paths

    def run(self) -> Run:
        """Run every stage in order and return the run directory."""
        from kwscompress import __version__

        # A run starts its results afresh: the previous run's are kept in results.previous.json.
        if self._run is None:
            self._run = Run(self.run_dir, fresh=True)
        else:
            self._run.start_fresh()
        record = self._run
        record.log.info("run started")
        plugins = [c.as_dict() for c in self.pm.all_components()]
        broken = self.pm.broken_rows()
        record.results.update(
            kwscompress_version=__version__,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            environment=environment(),
            config=self.config.to_dict(),
            plugins=plugins + broken,
            plugin_errors=[
                {"plugin": row["plugin"], "hook": "load", "error": row["description"]}
                for row in broken
            ],
        )
        record.save()
        self.load_data()
        self.features()
        self.train()
        self.evaluate()
        if self.config.stream.enabled:
            self.stream()
        self.compress()
        if self.export_ids:
            self.export()
            if self.config.mcu.enabled:
                self.mcu()
        if self.deploy_ids:
            self.deploy()
        self.estimate()
        self.profile()
        self.report()
        record.record("finished", datetime.now(UTC).isoformat(timespec="seconds"))
        return record

    def _check_sweep(self) -> None:
        """Expand the recipes and check every name the later stages use, before any work."""
        from kwscompress.compress.recipes import FLOAT_ID, expand_recipes, select_variants
        from kwscompress.errors import ConfigError

        config = self.config
        self.pm.component("executor", config.sweep.executor)
        recipes = config.compress.recipes if config.compress.enabled else []
        ids = [FLOAT_ID, *(v.id for v in expand_recipes(recipes, self.pm))]
        self.export_ids: list[str] = []
        if config.export.enabled:
            self.export_ids = select_variants(config.export.variants, ids, "export")
            for name in config.export.exporters:
                self.pm.component("exporter", name)
            if config.mcu.enabled:
                self.pm.component("mcu_runtime", config.mcu.runtime)
        self.deploy_ids: list[str] = []
        if config.deploy.enabled and config.deploy.variants:
            self.pm.component("backend", config.deploy.backend)
            self.deploy_ids = select_variants(config.deploy.variants, ids, "deploy")
            missing = [v for v in self.deploy_ids if v not in self.export_ids]
            if missing:
                raise ConfigError(
                    f"[deploy] variants: {missing[0]!r} must also be exported "
                    "([export] enabled and the variant listed in [export] variants)"
                )

    def _input_shape(self) -> tuple[int, int]:
        if self.feature_sets is not None:
            return self.feature_sets.shape
        data, features = self.config.data, self.config.features
        samples = data.sample_rate * data.clip_duration_ms // 1000
        window = int(data.sample_rate * features.window_ms / 1000)
        stride = int(data.sample_rate * features.stride_ms / 1000)
        return 1 + (samples - window) // stride, features.bins

    def _build_model(self) -> torch.nn.Module:
        spec = self.pm.component("model", self.config.model.name)
        labels = 2 + len(self.config.data.wanted_words)
        return spec.build(self._input_shape(), labels)

    def _plugin_version(self, kind: str, name: str) -> str:
        return self.pm.components(kind)[name].version
