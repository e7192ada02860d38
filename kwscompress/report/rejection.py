"""Report sections on rejection: what the model does when nobody says a keyword.

``Rejection`` (order 45) shows the ``_unknown_`` recall, each wanted word's false-accept rate,
the table of confusable words (what each was heard as) and accuracy on the band-limited and
fast test copies, from ``results["evaluate"]``, and the same for every compression variant
(``results["variants"]``). ``Streaming`` (order 46) shows the stream
evaluation: hits, misses, false accepts per hour, the chosen recognizer settings and the DET
curves, from ``results["stream"]``, the deployed variants' own streams (their rows'
``stream``) and the recordings ``kwscompress stream`` scored. Registered through the
``rejection_report`` entry point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kwscompress import hookimpl
from kwscompress.protocols import ReportSection, SectionContent
from kwscompress.report import blocks
from kwscompress.report.blocks import MISSING, Cell, fmt_percent
from kwscompress.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REJECTED = ("_silence_", "_unknown_")
COPIES = {
    "clean": "as recorded",
    "telephone": "telephone band (300-3400 Hz)",
    "lowpass4k": "8 kHz recording (4 kHz low-pass)",
    "fast": "1.25 times faster",
}


class RejectionSection:
    """``_unknown_`` recall, false accepts per word, confusables, altered test copies."""

    name = "rejection"
    description = "unknown recall, false accepts per keyword, confusable words, robustness"
    title = "Rejection"
    order = 45

    def render(self, run: Run) -> SectionContent | None:
        """From ``results["evaluate"]["rejection"]`` and ``["robustness"]``."""
        evaluation = run.results.get("evaluate") or {}
        rejection = evaluation.get("rejection")
        if not rejection:
            return None
        rates = rejection.get("false_accept_rate", {})
        cards = [("_unknown_ recall", fmt_percent(rejection.get("unknown_recall")), "test split")]
        cards += [
            (f"accepted as {word}", fmt_percent(rate), "of non-keyword test clips")
            for word, rate in rates.items()
        ]
        parts = [
            blocks.paragraph(
                "A keyword spotter is judged by what it does when nobody says a keyword. "
                "False-accept rate: the share of the test split's non-keyword clips (silence "
                "and _unknown_) that the model labels as that word."
            ),
            blocks.metrics(cards),
        ]
        words = rejection.get("words")
        if words:
            parts.append(_word_tables(words, list(rates)))
        parts.append(_robustness(evaluation.get("robustness"), list(rates)))
        parts.append(_variants(run.results.get("variants"), list(rates)))
        return blocks.combine(*parts)


class StreamingSection:
    """The streaming test: detections, misses, false accepts per hour, DET curves."""

    name = "streaming"
    description = "stream evaluation with the command recognizer, DET curves, chosen threshold"
    title = "Streaming"
    order = 46

    def render(self, run: Run) -> SectionContent | None:
        """From ``results["stream"]``, and the records ``kwscompress stream`` wrote."""
        stream = run.results.get("stream")
        if not stream:
            return _recordings(run)
        recognizer = stream.get("recognizer", {})
        hours = stream.get("hours") or 0.0
        parts = [
            blocks.paragraph(
                "The model runs over a long stream of test speakers' words on background noise "
                "as on the device: a window of features after every "
                f"{stream.get('slices_per_inference', 1)} new 20 ms slice(s), then the command "
                "recognizer (averaging, threshold, suppression). A detection is a hit when it "
                "comes between the keyword's start and "
                f"{stream.get('matching', {}).get('tolerance_ms', 0):g} ms after its end; every "
                "other keyword detection is a false accept."
            ),
            blocks.metrics(
                [
                    (
                        "false-reject rate",
                        fmt_percent(stream.get("false_reject_rate")),
                        f"{stream.get('misses', 0)} missed of "
                        f"{stream.get('hits', 0) + stream.get('misses', 0)}",
                    ),
                    (
                        "false accepts / hour",
                        _rate(stream.get("false_accepts_per_hour")),
                        f"{stream.get('false_accepts', 0)} in {hours * 60:.1f} min of "
                        f"{round(stream.get('words_per_hour') or 0):,} words/hour",
                    ),
                    (
                        "detection threshold",
                        str(recognizer.get("detection_threshold", MISSING)),
                        "chosen on the validation stream" if stream.get("tuned") else "configured",
                    ),
                ]
            ),
        ]
        chosen = stream.get("validation_at_chosen") or {}
        if chosen and not chosen.get("target_met", True):
            parts.append(
                blocks.note(
                    "No threshold reaches the target false-accept rate on the validation stream; "
                    "the one with the fewest false accepts was chosen.",
                    "warn",
                )
            )
        if (stream.get("false_reject_rate") or 0.0) > 0.5:
            parts.append(
                blocks.note(
                    "At the chosen settings the recognizer misses most keywords: the model does "
                    "not reject other words well enough for this false-accept target. Raise "
                    "[stream] target_false_accepts_per_hour or improve the model before "
                    "flashing these settings.",
                    "warn",
                )
            )
        per_keyword = stream.get("per_keyword") or {}
        rows = [
            [
                word,
                row.get("occurrences"),
                row.get("hits"),
                row.get("misses"),
                fmt_percent(row.get("false_reject_rate")),
                row.get("false_accepts"),
                _rate(row.get("false_accepts_per_hour")),
                _heard({"heard_as": stream.get("false_accept_words", {}).get(word, {})}),
            ]
            for word, row in per_keyword.items()
        ]
        parts.append(
            blocks.table(
                [
                    "keyword",
                    "said",
                    "hits",
                    "misses",
                    "false rejects",
                    "false accepts",
                    "per hour",
                    "false accepts fired on",
                ],
                rows,
                caption="Test stream at the chosen recognizer settings.",
            )
        )
        by_kind = stream.get("false_accepts_by_kind") or {}
        if by_kind:
            parts.append(
                blocks.paragraph(
                    "The false accepts fired on: "
                    + ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
                    + " (confusable: a rhyme or near neighbour of a keyword; keyword: the other "
                    "keyword, or a second detection of one)."
                )
            )
        default = stream.get("at_configured_threshold")
        if default:
            configured = default.get("recognizer", {}).get("detection_threshold")
            parts.append(
                blocks.paragraph(
                    f"At the configured threshold ({configured}) the "
                    f"test stream has a false-reject rate of "
                    f"{fmt_percent(default.get('false_reject_rate'))} and "
                    f"{_rate(default.get('false_accepts_per_hour'))} false accepts per hour."
                )
            )
        parts.append(
            blocks.definitions(
                [
                    (
                        "recognizer for the firmware",
                        ", ".join(f"{k} = {v}" for k, v in recognizer.items()),
                    )
                ]
                + [
                    (
                        f"{split} stream",
                        f"{entry.get('seconds', 0) / 60:.1f} min, "
                        + ", ".join(f"{n} {kind}" for kind, n in entry.get("words", {}).items()),
                    )
                    for split, entry in (stream.get("streams") or {}).items()
                ]
            )
        )
        det = {s: e.get("det") for s, e in (stream.get("streams") or {}).items() if e.get("det")}
        if det:
            parts.append(
                blocks.figure(
                    run,
                    det_figure(
                        det,
                        recognizer.get("detection_threshold"),
                        stream.get("target_false_accepts_per_hour"),
                    ),
                    "det-curves",
                    "DET curves per keyword over the detection threshold (validation dashed, "
                    "test solid); the dot marks the chosen threshold, the line the target rate.",
                )
            )
        parts.append(_deployed_streams(stream, run.results.get("variants")))
        parts.append(_recordings(run))
        return blocks.combine(*parts)


def _deployed_streams(trained: dict[str, Any], rows: Any) -> SectionContent | None:
    """The deployed variants on the same streams, each with the recognizer tuned for it."""
    streamed = [r for r in rows or [] if r.get("stream")]
    if not streamed:
        return None
    body = []
    models = [("trained model", trained, None)]
    models += [
        (r["id"], r["stream"], (r.get("deploy") or {}).get("recognizer_source")) for r in streamed
    ]
    for name, stream, source in models:
        recognizer = stream.get("recognizer") or {}
        configured = stream.get("at_configured_threshold") or {}
        body.append(
            [
                name,
                f"{recognizer.get('average_window_ms', MISSING)} ms, "
                f"{recognizer.get('detection_threshold', MISSING)}",
                fmt_percent(stream.get("false_reject_rate")),
                _rate(stream.get("false_accepts_per_hour")),
                fmt_percent(configured.get("false_reject_rate")),
                _rate(configured.get("false_accepts_per_hour")),
                source or MISSING,
            ]
        )
    return blocks.combine(
        blocks.heading("Deployed variants"),
        blocks.paragraph(
            "A deployed variant runs on the same streams and has its recognizer tuned on its "
            "own validation stream: a quantized model is more or less sure of the same words "
            "than the trained one, so the threshold chosen for one need not suit the other. "
            "The firmware renders the variant's own settings when they keep at least half of "
            "its validation stream's keywords; else the threshold with the fewest false accepts "
            "that keeps half of them, else the [recognizer] config."
        ),
        blocks.table(
            [
                "model",
                "window, threshold",
                "false rejects",
                "false accepts / hour",
                "false rejects (configured)",
                "false accepts / hour (configured)",
                "firmware renders",
            ],
            body,
            caption="Test stream, at each model's tuned and at the configured recognizer.",
        ),
    )


def _recordings(run: Run) -> SectionContent | None:
    """The recordings scored by ``kwscompress stream`` (``<run>/stream/recordings/*.json``)."""
    body = []
    for path in sorted((run.path / "stream" / "recordings").glob("*.json")):
        try:
            record = json.loads(path.read_text("utf-8"))
            settings = record["recognizer"]
            row = [
                Path(record["recording"]).name,
                record["variant"],
                f"{record['seconds'] / 60:.1f}",
                f"{settings['average_window_ms']} ms, {settings['detection_threshold']}",
                record["words"].get("keyword", 0),
                record["hits"],
                fmt_percent(record["false_reject_rate"]),
                record["false_accepts"],
                _rate(record["false_accepts_per_hour"]),
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            row = [path.name, f"unreadable ({type(exc).__name__})", *[MISSING] * 7]
        body.append(row)
    if not body:
        return None
    return blocks.combine(
        blocks.heading("Recordings"),
        blocks.paragraph(
            "Recordings scored with `kwscompress stream`: the variant's .tflite and its "
            "firmware's recognizer (or the settings given) over the whole recording, as on the "
            "device. A recording without a label file holds no keyword, so every detection is a "
            "false accept."
        ),
        blocks.table(
            [
                "recording",
                "variant",
                "minutes",
                "window, threshold",
                "keywords said",
                "hits",
                "false rejects",
                "false accepts",
                "per hour",
            ],
            body,
            caption="From stream/recordings/ in the run directory.",
        ),
    )


def det_figure(
    det: dict[str, list[dict[str, Any]]], chosen: int | None, target: float | None
) -> Figure:
    """False-reject rate against false accepts per hour, one curve per keyword and stream."""
    from matplotlib.figure import Figure  # matplotlib loads only when a report is drawn

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    colours = ["#2f6fb3", "#e07b39", "#3a9d5d", "#8e44ad", "#c8372d", "#52606d"]
    keywords = sorted({k for rows in det.values() for r in rows for k in r["per_keyword"]})
    floor = 0.1  # per hour: zero false accepts is drawn here, on the log axis
    for i, word in enumerate(keywords):
        colour = colours[i % len(colours)]
        for split, rows in det.items():
            xs = [max(r["per_keyword"][word]["false_accepts_per_hour"] or 0, floor) for r in rows]
            ys = [r["per_keyword"][word]["false_reject_rate"] or 0 for r in rows]
            style = "--" if split == "validation" else "-"
            label = f"{word} ({split})"
            ax.plot(xs, ys, style, color=colour, label=label, linewidth=1.4)
            if chosen is not None and split != "validation":
                at = next((r for r in rows if r["threshold"] == chosen), None)
                if at:
                    x = max(at["per_keyword"][word]["false_accepts_per_hour"] or 0, floor)
                    ax.plot(
                        [x], [at["per_keyword"][word]["false_reject_rate"] or 0], "o", color=colour
                    )
    if target:
        ax.axvline(target, color="#9aa5b1", linewidth=1, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel(f"false accepts per hour (0 drawn at {floor})")
    ax.set_ylabel("false-reject rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


def _word_tables(words: dict[str, Any], keywords: list[str]) -> SectionContent:
    by_kind = words.get("by_kind", {})
    summary = blocks.table(
        ["kind of word", "clips", "rejected"],
        [
            [kind, entry.get("clips"), fmt_percent(entry.get("rejection_rate"))]
            for kind, entry in sorted(by_kind.items())
        ],
        caption="Every non-keyword clip of the test speakers, by kind.",
    )
    rows = []
    for word, row in (words.get("words") or {}).items():
        if row.get("kind") != "confusable":
            continue
        heard = row.get("heard_as", {})
        rows.append(
            [
                Cell(word, "of " + ", ".join(row.get("confusable_of", []))),
                row.get("clips"),
                Cell(fmt_percent(row.get("rejected")), kind=_kind(row.get("rejected"))),
                *(heard.get(k, 0) for k in keywords),
            ]
        )
    confusable = blocks.table(
        ["confusable", "clips", "rejected", *(f"heard as {k}" for k in keywords)],
        rows,
        caption="Confusable words (rhymes and one-phoneme neighbours of the keywords).",
        sortable=True,
    )
    worst = [
        [word, row.get("kind"), row.get("clips"), fmt_percent(row.get("rejected")), _heard(row)]
        for word, row in list((words.get("words") or {}).items())[:10]
    ]
    return blocks.combine(
        blocks.heading("Confusable and other words"),
        summary,
        confusable if rows else None,
        blocks.details(
            "Least rejected words",
            blocks.table(["word", "kind", "clips", "rejected", "heard as"], worst),
        ),
    )


def _robustness(robustness: dict[str, Any] | None, keywords: list[str]) -> SectionContent | None:
    if not robustness:
        return None
    rows = []
    for name, description in COPIES.items():
        entry = robustness.get(name)
        if not entry:
            continue
        per_class = entry.get("per_class", {})
        rows.append(
            [
                Cell(name, description),
                fmt_percent(entry.get("accuracy")),
                *(fmt_percent(per_class.get(k)) for k in ["_unknown_", *keywords]),
            ]
        )
    return blocks.combine(
        blocks.heading("Altered test copies"),
        blocks.table(
            ["copy", "accuracy", "_unknown_", *keywords],
            rows,
            caption=f"The {robustness.get('clips', 0)} test clips with a file (silence left "
            "out), altered.",
        ),
    )


def _variants(rows: Any, keywords: list[str]) -> SectionContent | None:
    """Every sweep variant's rejection beside the float model's (rows scored on the probes)."""
    scored = [r for r in rows or [] if r.get("status") == "ok" and r.get("rejection")]
    if not scored:
        return None
    kinds = ("confusable", "filler", "other")
    body = []
    for row in scored:
        rejection = row["rejection"]
        by_kind = (rejection.get("words") or {}).get("by_kind", {})
        copies = row.get("robustness") or {}
        voices = row.get("held_out_voices") or {}
        values = [
            (row.get("accuracy") or {}).get("testing"),
            rejection.get("unknown_recall"),
            *((rejection.get("false_accept_rate") or {}).get(k) for k in keywords),
            *((by_kind.get(kind) or {}).get("rejection_rate") for kind in kinds),
            *((copies.get(name) or {}).get("accuracy") for name in ("telephone", "lowpass4k")),
            (copies.get("fast") or {}).get("accuracy"),
            voices.get("held_out_accuracy"),
            voices.get("seen_accuracy"),
        ]
        body.append(
            [
                Cell(row.get("id", ""), sort=row.get("id", "")),
                *(Cell(fmt_percent(v), sort=v if v is not None else "") for v in values),
            ]
        )
    headers = [
        "variant",
        "test",
        "_unknown_ recall",
        *(f"accepted as {k}" for k in keywords),
        "confusables rejected",
        "fillers rejected",
        "other speech rejected",
        "telephone",
        "4 kHz",
        "fast",
        "held-out voices",
        "seen voices",
    ]
    return blocks.combine(
        blocks.heading("Every compression variant"),
        blocks.paragraph(
            "The same measurements for every variant of the sweep, the float model first: "
            "compression can keep the overall accuracy and still lose rejection, or the "
            "band-limited and fast speech."
        ),
        blocks.table(
            headers, body, caption=f"{len(scored)} variants. Click a header to sort.", sortable=True
        ),
    )


def _heard(row: dict[str, Any]) -> str:
    items = sorted(row.get("heard_as", {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{word} {count}" for word, count in items) or MISSING


def _kind(rejected: float | None) -> str:
    return "good" if (rejected or 0.0) >= 0.9 else "bad"


def _rate(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The rejection and streaming sections."""
    return [RejectionSection(), StreamingSection()]
