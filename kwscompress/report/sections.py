"""The built-in report sections (a plugin, registered as entry point ``report``).

Each section reads one part of ``results.json`` and returns None when that stage has not run,
so the report of a partial run shows what exists. Orders leave gaps of ten for plugins:
compression sweeps and deployment sections slot in after the host latency (70).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from markupsafe import Markup

from kwscompress import hookimpl
from kwscompress.config import Config, FeatureConfig
from kwscompress.errors import KwsError, UnknownComponentError
from kwscompress.protocols import ReportSection, SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_bytes, fmt_int, fmt_ms, fmt_percent
from kwscompress.run import Run

SPLITS = ("training", "validation", "testing")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
MEASURED_KEYS = {
    "flash": "deploy.tflite_bytes",
    "ram": "deploy.arena_bytes",
    "board_latency": "deploy.board_latency_ms",
}
"""Where the report looks for the measurements that stand beside the estimates, in the float
model's row of ``results["variants"]`` (its full-int8 TFLite export and board profile)."""


def lookup(results: dict[str, Any], dotted: str) -> Any:
    """``results["a"]["b"]`` for ``"a.b"``, or None when any part is missing."""
    value: Any = results
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def run_config(results: dict[str, Any]) -> Config:
    """The run's resolved config from ``results["config"]``, or the defaults when absent."""
    values = results.get("config")
    if isinstance(values, dict):
        try:
            return Config.from_dict(values, source="results.json config")
        except KwsError:
            pass  # an older or newer layout: the report still renders with defaults
    return Config()


def wanted_words(results: dict[str, Any]) -> list[str]:
    """The run's wanted words, from whichever stage recorded them."""
    data = results.get("data") or {}
    if data.get("wanted_words"):
        return list(data["wanted_words"])
    labels = lookup(results, "evaluate.labels") or list(
        (lookup(results, "data.split_summary.training") or {}).keys()
    )
    words = [label for label in labels if label not in (SILENCE, UNKNOWN, "total")]
    return words or list(run_config(results).data.wanted_words)


class OverviewSection:
    """Run name, versions, config summary and the headline numbers."""

    name = "overview"
    description = "run summary: config, versions and headline numbers"
    title = "Overview"
    order = 10

    def render(self, run: Run) -> SectionContent | None:
        """Always renders: every run has at least a name and a config."""
        results = run.results
        config = run_config(results)
        cards = []
        for split in ("testing", "validation"):
            accuracy = lookup(results, f"evaluate.accuracy.{split}")
            if accuracy is not None:
                cards.append((f"{split} accuracy", fmt_percent(accuracy), config.model.name))
        total = lookup(results, "estimate.total") or {}
        if total:
            cards.append(("parameters", fmt_int(total.get("parameters")), "estimate"))
            cards.append(("MACs per inference", fmt_int(total.get("macs")), "estimate"))
        int8 = _fit_row(results, 8)
        if int8:
            cards.append(("int8 flash", f"{int8['flash_percent']:.1f} %", "of the board, estimate"))
        median = lookup(results, "profile.median_ms")
        if median is not None:
            cards.append(("host CPU latency", fmt_ms(median), "median, batch 1"))

        versions = results.get("versions") or {}
        data = config.data
        summary = blocks.definitions(
            [
                ("run directory", Markup("<code>{}</code>").format(run.path)),
                ("wanted words", ", ".join(wanted_words(results))),
                ("data", f"{data.source}" + (f" ({data.root})" if data.root else "")),
                ("features", _features_line(config.features)),
                ("model", config.model.name),
                (
                    "training",
                    f"{config.train.epochs} epochs, batch {config.train.batch_size}, "
                    f"Adam lr {config.train.learning_rate:g}, seed {config.train.seed}",
                ),
                ("stages recorded", ", ".join(_stage_names(results)) or "none"),
                (
                    "versions",
                    ", ".join(f"{name} {version}" for name, version in versions.items()),
                ),
            ]
        )
        return blocks.combine(
            blocks.metrics(cards) if cards else None,
            self._failure_note(results),
            self._plugin_error_note(results),
            summary,
        )

    @staticmethod
    def _failure_note(results: dict[str, Any]) -> SectionContent | None:
        failed = results.get("failed")
        if not isinstance(failed, dict):
            return None
        return blocks.note(
            f"The run stopped in stage {failed.get('stage')}: {failed.get('message')}. "
            "The stages before it are shown.",
            "error",
        )

    @staticmethod
    def _plugin_error_note(results: dict[str, Any]) -> SectionContent | None:
        errors = [e for e in results.get("plugin_errors") or [] if isinstance(e, dict)]
        if not errors:
            return None
        lines = "; ".join(
            f"plugin {e.get('plugin')!r} in {e.get('hook')}: {e.get('error')}" for e in errors
        )
        return blocks.note(
            f"{len(errors)} plugin error{'s' if len(errors) > 1 else ''} during the run "
            f"(the run carried on): {lines}",
            "warn",
        )


class PreprocessingSection:
    """Loud and quiet example clips of each word, in every representation."""

    name = "preprocessing"
    description = "example clips as waveform, spectrum, spectrograms, MFCC and model features"
    title = "Preprocessing"
    order = 20

    def render(self, run: Run) -> SectionContent | None:
        """One figure per wanted word; None when the run has no data stage."""
        from kwscompress.report import figures
        from kwscompress.report.examples import compute_views, pick_examples
        from kwscompress.report.render import current_plugin_manager

        root_text = lookup(run.results, "data.root")
        if not root_text:
            return None
        root = Path(root_text)
        if not root.is_dir():
            return blocks.note(
                f"The dataset folder {root} no longer exists, so no example clips can be shown.",
                "warn",
            )
        config = run_config(run.results)
        features = config.features
        sample_rate = config.data.sample_rate
        extractor, missing = None, ""
        try:
            extractor = current_plugin_manager().component("feature_extractor", features.name)
        except UnknownComponentError as exc:
            missing = str(exc)
        parts = [
            blocks.paragraph(
                f"For each word, the loudest and the quietest clip (by RMS level) and what each "
                f"processing step makes of it. Frames use the model's {features.window_ms:g} ms "
                f"window and {features.stride_ms:g} ms stride; each column shares its scale "
                f"between the two clips, so a level difference shows wherever a representation "
                f"keeps it. The last column is exactly what the model is trained on "
                f"({features.name} features, {features.bins} bins)."
            )
        ]
        if missing:
            parts.append(blocks.note(f"No model-input column: {missing}.", "warn"))
        for word in wanted_words(run.results):
            examples, scanned = pick_examples(root / word, sample_rate)
            if not examples:
                parts.append(blocks.note(f"No readable clips in {root / word}.", "warn"))
                continue
            views = [
                (e, compute_views(e.audio, features, sample_rate, extractor)) for e in examples
            ]
            fig = figures.preprocessing_grid(word, views, f"Model input ({features.name})")
            levels = ", ".join(f"{e.kind} {e.path.name} at {e.rms_dbfs:.1f} dBFS" for e in examples)
            parts.append(
                blocks.figure(
                    run,
                    fig,
                    f"preprocessing-{_slug(word)}",
                    f"“{word}”: {levels} (chosen among {scanned} clips).",
                )
            )
        return blocks.combine(*parts)


class DatasetSection:
    """Clips per class in each split, and the files that were skipped."""

    name = "dataset"
    description = "dataset split table and skipped files"
    title = "Dataset"
    order = 30

    def render(self, run: Run) -> SectionContent | None:
        """The split table (the reference report's Table 2, per class)."""
        summary = lookup(run.results, "data.split_summary")
        if not summary:
            return None
        splits = [s for s in SPLITS if s in summary]
        classes = [c for c in summary[splits[0]] if c != "total"]
        grand = sum(summary[s].get("total", 0) for s in splits) or 1
        rows = []
        for split in splits:
            counts = summary[split]
            total = counts.get("total", sum(counts.get(c, 0) for c in classes))
            rows.append(
                [
                    split,
                    *(counts.get(c, 0) for c in classes),
                    Cell(total, f"{100 * total / grand:.1f} % of clips"),
                ]
            )
        footer = [
            [
                "all splits",
                *(sum(summary[s].get(c, 0) for s in splits) for c in classes),
                sum(summary[s].get("total", 0) for s in splits),
            ]
        ]
        parts = [
            blocks.table(
                ["split", *classes, "total"],
                rows,
                footer=footer,
                caption=f"Clips per class and split ({len(classes)} classes).",
            ),
            blocks.paragraph(
                "Clips are assigned to a split by a hash of the speaker id in the file name "
                "(the Speech Commands rule), so no speaker is in two splits. "
                f"{SILENCE} clips are background noise; {UNKNOWN} clips are other words."
            ),
        ]
        skipped = lookup(run.results, "data.skipped_files") or {}
        if skipped.get("count"):
            files = skipped.get("files", [])
            reasons = Counter(str(f.get("reason", "")).split(":")[0] for f in files)
            were = "files were" if skipped["count"] != 1 else "file was"
            parts.append(
                blocks.note(
                    f"{skipped['count']} {were} skipped: "
                    + ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
                    + ".",
                    "warn",
                )
            )
            parts.append(
                blocks.details(
                    "Skipped files",
                    blocks.table(
                        ["file", "reason"],
                        [[f.get("path", ""), f.get("reason", "")] for f in files],
                    ),
                )
            )
        return blocks.combine(*parts)


class AccuracySection:
    """Accuracy per class and split, confusion matrix, held-out voices and reference clips."""

    name = "accuracy"
    description = "per-class accuracy, confusion matrix, held-out voices, reference clips"
    title = "Accuracy"
    order = 40

    def render(self, run: Run) -> SectionContent | None:
        """Tables and plots from ``results["evaluate"]``."""
        from kwscompress.report import figures  # matplotlib loads only when a report is drawn

        evaluation = run.results.get("evaluate")
        if not evaluation:
            return None
        accuracy = evaluation.get("accuracy", {})
        per_class = evaluation.get("per_class", {})
        labels = evaluation.get("labels") or [
            c for c in next(iter(per_class.values()), {}) if c != "total"
        ]
        model = evaluation.get("model", "model")
        parts = [
            blocks.metrics(
                [
                    (f"{s} accuracy", fmt_percent(accuracy[s]), model)
                    for s in SPLITS
                    if s in accuracy
                ]
            )
        ]
        if per_class:
            splits = [s for s in SPLITS if s in per_class]
            rows = [
                [label, *(_accuracy_cell(per_class[s].get(label)) for s in splits)]
                for label in labels
            ]
            footer = [["total", *(_accuracy_cell(per_class[s].get("total")) for s in splits)]]
            parts.append(
                blocks.table(
                    ["class", *splits],
                    rows,
                    footer=footer,
                    caption=f"Accuracy of {model} per class (correct / clips).",
                )
            )
        plots = []
        confusion = evaluation.get("confusion") or {}
        split = next((s for s in ("testing", "validation", "training") if s in confusion), None)
        if split:
            plots.append(
                blocks.figure(
                    run,
                    figures.confusion_matrix(confusion[split], labels, split),
                    "confusion",
                    f"Confusion matrix on the {split} split; colour is the share of each true "
                    "class.",
                )
            )
        if per_class:
            plots.append(
                blocks.figure(
                    run,
                    figures.per_class_accuracy(per_class, labels),
                    "per-class-accuracy",
                    "Accuracy of each class in each split.",
                )
            )
        if plots:
            parts.append(blocks.columns(*plots))
        parts.append(_held_out(evaluation.get("held_out_voices")))
        parts.append(_reference_clips(evaluation.get("reference_clips"), labels))
        return blocks.combine(*parts)


class TrainingSection:
    """Accuracy and loss per epoch."""

    name = "training"
    description = "training and validation curves"
    title = "Training curves"
    order = 50

    def render(self, run: Run) -> SectionContent | None:
        """The curves (the reference report's Figure 4) and the epoch table."""
        from kwscompress.report import figures  # matplotlib loads only when a report is drawn

        train = run.results.get("train") or {}
        history = train.get("history")
        if not history:
            return None
        best = train.get("best_epoch")
        best_row = next((r for r in history if r["epoch"] == best), None)
        seconds = sum(r.get("seconds") or 0 for r in history)
        cards = [("epochs", str(len(history)), f"{seconds:.1f} s of training")]
        if best_row:
            cards.append(
                (
                    "best epoch",
                    str(best),
                    f"validation {fmt_percent(best_row.get('validation_accuracy'))}",
                )
            )
        last = history[-1]
        cards.append(
            (
                "final training accuracy",
                fmt_percent(last.get("train_accuracy")),
                f"loss {last.get('train_loss', float('nan')):.3f}",
            )
        )
        words = train.get("word_classes")
        if words:
            weight = run_config(run.results).train.word_head
            # The training loss holds the word head's too; the validation loss does not.
            cards.append(
                ("word head", f"{words} words", f"training loss includes {weight} x its loss")
            )
        rows = [
            [
                r["epoch"],
                f"{r.get('train_loss', float('nan')):.4f}",
                fmt_percent(r.get("train_accuracy")),
                f"{r.get('validation_loss', float('nan')):.4f}",
                Cell(
                    fmt_percent(r.get("validation_accuracy")), kind="good" if r is best_row else ""
                ),
                f"{r.get('learning_rate', float('nan')):g}",
                f"{r.get('seconds', 0):.1f}",
            ]
            for r in history
        ]
        return blocks.combine(
            blocks.metrics(cards),
            blocks.figure(
                run,
                figures.training_curves(history, best),
                "training-curves",
                "Accuracy and loss per epoch; the dashed line marks the best validation epoch "
                "(the checkpoint that is kept), dotted lines the learning-rate steps.",
            ),
            blocks.details(
                "Every epoch",
                blocks.table(
                    ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"],
                    rows,
                ),
            ),
        )


class EstimateSection:
    """Static cost of the model and whether it fits the board."""

    name = "estimate"
    description = "parameters, MACs, memory and board budget (estimated), beside measurements"
    title = "Cost estimate"
    order = 60

    def render(self, run: Run) -> SectionContent | None:
        """Per-layer table, totals, memory, board budget bars, estimate | measured rows."""
        from kwscompress.report import figures  # matplotlib loads only when a report is drawn

        estimate = run.results.get("estimate")
        if not estimate:
            return None
        layers = estimate.get("layers", [])
        total = estimate.get("total", {})
        rows = [
            [
                layer["name"],
                layer.get("type", ""),
                _shape(layer.get("output_shape")),
                layer.get("parameters", 0),
                layer.get("macs", 0),
                layer.get("flops", 0),
            ]
            for layer in layers
        ]
        footer = [
            [
                "total",
                "",
                "",
                total.get("parameters", 0),
                total.get("macs", 0),
                total.get("flops", 0),
            ]
        ]
        parts = [
            blocks.note(
                Markup(
                    "{} Static analysis of <b>{}</b> by {} for one input of shape {}. "
                    "Measured values stand beside these numbers as later stages "
                    "produce them."
                ).format(
                    blocks.badge(estimate.get("label", "estimate")),
                    estimate.get("model", "the model"),
                    estimate.get("estimator", "the estimator"),
                    _shape(estimate.get("input_shape")),
                )
            ),
            blocks.table(
                ["layer", "type", "output", "parameters", "MACs", "FLOPs"],
                rows,
                footer=footer,
                caption="Cost of one batch-1 forward pass per layer.",
            ),
        ]
        if estimate.get("flop_convention"):
            parts.append(blocks.paragraph(f"FLOP convention: {estimate['flop_convention']}"))
        memory = estimate.get("memory") or {}
        peak = memory.get("peak_activation_bytes") or {}
        parts.append(blocks.heading("Memory"))
        parts.append(
            blocks.definitions(
                [
                    *((f"peak activations ({kind})", fmt_bytes(n)) for kind, n in peak.items()),
                    ("peak reached at", memory.get("peak_at_layer")),
                    (
                        "input + output",
                        fmt_bytes(memory.get("simple_forward_bytes"))
                        + (
                            f": {memory['simple_forward_definition']}"
                            if memory.get("simple_forward_definition")
                            else ""
                        ),
                    ),
                ]
            )
        )
        board = estimate.get("board") or {}
        fit = estimate.get("fit") or []
        if fit:
            parts.append(blocks.heading(f"Budget on {board.get('title') or board.get('name')}"))
            parts.append(
                blocks.paragraph(
                    f"{board.get('core', '')} at {board.get('clock_hz', 0) / 1e6:g} MHz, "
                    f"{fmt_bytes(board.get('flash_bytes'))} flash"
                    + (
                        f" (a sketch can use {fmt_bytes(board['usable_flash_bytes'])})"
                        if board.get("usable_flash_bytes", board.get("flash_bytes"))
                        != board.get("flash_bytes")
                        else ""
                    )
                    + ", "
                    f"{fmt_bytes(board.get('ram_bytes'))} RAM."
                )
            )
            parts.append(
                blocks.figure(
                    run,
                    figures.budget_bars(fit, board),
                    "board-budget",
                    "Estimated flash and RAM use per weight bit width; red bars do not fit.",
                )
            )
            parts.append(
                blocks.table(
                    ["weights", "weight bytes", "flash", "RAM", "verdict"],
                    [
                        [
                            f"{r['bits']}-bit",
                            r.get("weight_bytes"),
                            Cell(
                                fmt_bytes(r.get("flash_bytes")),
                                f"{r.get('flash_percent', 0):.2f} %",
                            ),
                            Cell(fmt_bytes(r.get("ram_bytes")), f"{r.get('ram_percent', 0):.2f} %"),
                            Cell(
                                r.get("verdict", "fits" if r.get("fits") else "does not fit"),
                                kind="good" if r.get("fits") else "bad",
                            ),
                        ]
                        for r in sorted(fit, key=lambda r: -r["bits"])
                    ],
                )
            )
        throughput = estimate.get("throughput") or {}
        if throughput.get("line"):
            parts.append(blocks.paragraph(throughput["line"]))
        parts.append(blocks.heading("Estimate beside measurement"))
        parts.append(self._versus_measured(run.results))
        return blocks.combine(*parts)

    @staticmethod
    def _versus_measured(results: dict[str, Any]) -> SectionContent:
        int8 = _fit_row(results, 8) or {}

        rows = results.get("variants")
        float_row = (
            next((r for r in rows if r.get("id") == "float"), {}) if isinstance(rows, list) else {}
        )

        def measured(key: str, show: Any) -> str | None:
            value = lookup(float_row, MEASURED_KEYS[key])
            return None if value is None else show(value)

        return blocks.estimate_measured(
            [
                (
                    "int8 model in flash",
                    fmt_bytes(int8.get("flash_bytes")),
                    measured("flash", fmt_bytes),
                ),
                (
                    "int8 RAM (tensor arena)",
                    fmt_bytes(int8.get("ram_bytes")),
                    measured("ram", fmt_bytes),
                ),
                (
                    "inference time on the board",
                    "no static estimate",
                    measured("board_latency", fmt_ms),
                ),
            ]
        )


class LatencySection:
    """Host inference latency and the busiest operators."""

    name = "latency"
    description = "host CPU (and GPU) inference latency, top operators"
    title = "Host latency"
    order = 70
    top_operators = 10

    def render(self, run: Run) -> SectionContent | None:
        """Table 1 of the reference report, measured with the PyTorch profiler."""
        from kwscompress.report import figures  # matplotlib loads only when a report is drawn

        profile = run.results.get("profile")
        if not profile:
            return None
        cuda = profile.get("cuda")
        rows = [
            [
                "CPU",
                profile.get("threads"),
                fmt_ms(profile.get("median_ms")),
                fmt_ms(profile.get("p10_ms")),
                fmt_ms(profile.get("p90_ms")),
            ]
        ]
        if cuda:
            rows.append(
                [
                    "CUDA",
                    MISSING,
                    fmt_ms(cuda.get("median_ms")),
                    fmt_ms(cuda.get("p10_ms")),
                    fmt_ms(cuda.get("p90_ms")),
                ]
            )
        else:
            rows.append(
                ["CUDA", MISSING, Cell(profile.get("note") or "no GPU", kind="muted"), "", ""]
            )
        parts = [
            blocks.table(
                ["device", "threads", "median", "p10", "p90"],
                rows,
                caption=f"Batch {profile.get('batch', 1)}, {profile.get('runs')} timed runs after "
                f"{profile.get('warmup')} warm-up runs.",
            )
        ]
        operators = profile.get("operators") or []
        if operators:
            top = sorted(operators, key=lambda r: -r["self_cpu_ms"])[: self.top_operators]
            parts.append(
                blocks.columns(
                    blocks.table(
                        ["operator", "self CPU", "calls"],
                        [[r["name"], fmt_ms(r["self_cpu_ms"]), r.get("calls", "")] for r in top],
                        caption="Busiest operators by self CPU time.",
                    ),
                    blocks.figure(
                        run,
                        figures.operator_bars(top),
                        "host-operators",
                        "Self CPU time of the busiest operators.",
                    ),
                )
            )
        return blocks.combine(*parts)


BUILTIN_SECTIONS: list[ReportSection] = [
    OverviewSection(),
    PreprocessingSection(),
    DatasetSection(),
    AccuracySection(),
    TrainingSection(),
    EstimateSection(),
    LatencySection(),
]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The built-in sections: overview, preprocessing, dataset, accuracy, training, estimate,
    host latency."""
    return list(BUILTIN_SECTIONS)


def _fit_row(results: dict[str, Any], bits: int) -> dict[str, Any] | None:
    return next((r for r in lookup(results, "estimate.fit") or [] if r.get("bits") == bits), None)


def _features_line(features: FeatureConfig) -> str:
    return (
        f"{features.name}, {features.window_ms:g} ms window, {features.stride_ms:g} ms "
        f"stride, {features.bins} bins"
    )


def _stage_names(results: dict[str, Any]) -> list[str]:
    # A stage's entry is the object with its duration; the other keys are run metadata.
    return [k for k, v in results.items() if isinstance(v, dict) and "seconds" in v]


def _shape(shape: Any) -> str:
    return " \N{MULTIPLICATION SIGN} ".join(str(n) for n in shape) if shape else ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "word"


def _accuracy_cell(entry: dict[str, Any] | None) -> Cell:
    if not entry:
        return Cell(MISSING, kind="muted")
    return Cell(
        fmt_percent(entry.get("accuracy")),
        f"{entry.get('correct', 0):,} / {entry.get('samples', 0):,}",
    )


def _held_out(held: dict[str, Any] | None) -> SectionContent | None:
    if not held:
        return None
    return blocks.combine(
        blocks.heading("Held-out voices"),
        blocks.paragraph(
            "Voice families that never appear in training: accuracy on them shows whether the "
            "model learned the words or the voices."
        ),
        blocks.table(
            ["voices", "clips", "accuracy"],
            [
                [
                    Cell("held out", ", ".join(held.get("families", []))),
                    held.get("held_out_samples", MISSING),
                    fmt_percent(held.get("held_out_accuracy")),
                ],
                ["seen in training", MISSING, fmt_percent(held.get("seen_accuracy"))],
            ],
        ),
    )


def _reference_clips(reference: dict[str, Any] | None, labels: list[str]) -> SectionContent | None:
    if not reference or not reference.get("clips"):
        return None
    rows = []
    for clip in reference["clips"]:
        scores = clip.get("scores") or {}
        ok = clip.get("predicted") == clip.get("expected")
        rows.append(
            [
                Markup("<code>{}</code>").format(clip.get("file", "")),
                clip.get("expected", ""),
                Cell(clip.get("predicted", ""), kind="good" if ok else "bad"),
                *(
                    fmt_percent(scores.get(label), 0) if label in scores else MISSING
                    for label in labels
                ),
            ]
        )
    verdict = "all predicted correctly" if reference.get("all_correct") else "some are wrong"
    return blocks.combine(
        blocks.heading("Reference clips"),
        blocks.paragraph(
            f"Real Speech Commands recordings from TFLM's micro_speech test data, labelled by the "
            f"trained model ({verdict}); the score columns are the model's probabilities."
        ),
        blocks.table(["clip", "expected", "predicted", *labels], rows),
    )
