"""The report's plots, drawn with matplotlib's object API (no pyplot, no global backend).

Each function returns a :class:`matplotlib.figure.Figure`; saving it as PNG uses the Agg
renderer, so nothing here needs a display and nothing changes matplotlib's global state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from itertools import pairwise
from typing import Any, ParamSpec

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from kwscompress.report.examples import Example, Views

SPLIT_COLOURS = {"training": "#2f6fb3", "validation": "#e07b39", "testing": "#3a9d5d"}
FIT_COLOUR, NO_FIT_COLOUR = "#4c8bc9", "#c8372d"
IMAGE_CMAP = "magma"

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": "#334e68",
    "xtick.color": "#52606d",
    "ytick.color": "#52606d",
    "axes.grid": False,
    "grid.color": "#e4e7eb",
    "legend.frameon": False,
}

P = ParamSpec("P")


def _styled(build: Callable[P, Figure]) -> Callable[P, Figure]:
    @wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(_STYLE):
            return build(*args, **kwargs)

    return wrapper


@_styled
def preprocessing_grid(
    word: str, examples: Sequence[tuple[Example, Views]], model_input: str
) -> Figure:
    """One row per example clip: waveform, spectrum, spectrogram, mel, MFCC, micro features.

    Each column shares its axis limits and colour scale between rows, so a quiet clip looks
    quieter wherever the representation keeps the level, and alike where it normalises it.
    """
    columns = [
        "Waveform",
        "Magnitude spectrum",
        "Spectrogram",
        "Mel spectrogram",
        "MFCC",
        model_input,
    ]
    fig = Figure(figsize=(15, 2.6 * len(examples) + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(examples), len(columns)))
    views = [v for _, v in examples]
    spectrum_floor = max(min(float(v.spectrum_db.max()) for v in views) - 90, -140)
    limits = {
        "spectrogram": _shared_db_range([v.spectrogram_db for v in views]),
        "mel": _shared_db_range([v.mel_db for v in views]),
        "mfcc": _shared_range([v.mfcc for v in views]),
        "micro": _shared_range([v.micro for v in views if v.micro is not None]),
    }
    nyquist = float(views[0].spectrum_hz[-1])
    for row, (example, view) in enumerate(examples):
        ax = axes[row]
        seconds = len(example.audio) / (2 * nyquist)
        time = np.linspace(0, seconds, len(example.audio), endpoint=False)
        colour = "#2f6fb3" if example.kind == "loud" else "#7b8794"
        ax[0].plot(time, example.audio, color=colour, linewidth=0.5)
        ax[0].set(ylim=(-1, 1), xlim=(0, seconds), xlabel="time (s)")
        ax[0].set_ylabel(
            f"{example.kind}\nRMS {example.rms_dbfs:.1f} dBFS", fontweight="bold", color="#1e3a5f"
        )
        ax[1].plot(view.spectrum_hz / 1000, view.spectrum_db, color=colour, linewidth=0.6)
        ax[1].set(
            xlim=(0, nyquist / 1000),
            ylim=(spectrum_floor, 0),
            xlabel="frequency (kHz)",
            ylabel="magnitude (dBFS)",
        )
        extent_hz = (0, seconds, 0, nyquist / 1000)
        _image(ax[2], view.spectrogram_db, limits["spectrogram"], extent_hz, "frequency (kHz)")
        _image(ax[3], view.mel_db, limits["mel"], (0, seconds, 0, view.mel_db.shape[0]), "mel band")
        _image(
            ax[4],
            view.mfcc,
            limits["mfcc"],
            (0, seconds, 0, view.mfcc.shape[0]),
            "coefficient",
            cmap="coolwarm",
        )
        if view.micro is None:
            ax[5].set_axis_off()
            ax[5].text(
                0.5,
                0.5,
                "not available",
                ha="center",
                va="center",
                transform=ax[5].transAxes,
                color="#9aa5b1",
            )
        else:
            _image(
                ax[5],
                view.micro,
                limits["micro"],
                (0, seconds, 0, view.micro.shape[0]),
                "channel",
                cmap="viridis",
            )
        for col, title in enumerate(columns):
            if row == 0:
                ax[col].set_title(title)
            if row < len(examples) - 1:
                ax[col].set_xlabel("")
    fig.suptitle(f"“{word}”", fontsize=14, fontweight="bold", x=0.01, ha="left")
    return fig


def _shared_db_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    top = max(float(a.max()) for a in arrays)
    return top - 80.0, top


def _shared_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    if not arrays:
        return 0.0, 1.0
    low = min(float(np.percentile(a, 1)) for a in arrays)
    high = max(float(np.percentile(a, 99)) for a in arrays)
    return low, high if high > low else low + 1.0


def _image(
    ax: Any,
    data: np.ndarray,
    limits: tuple[float, float],
    extent: tuple[float, float, float, float],
    ylabel: str,
    cmap: str = IMAGE_CMAP,
) -> None:
    ax.imshow(
        data,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=limits[0],
        vmax=limits[1],
        extent=extent,
        interpolation="nearest",
    )
    ax.set(xlabel="time (s)", ylabel=ylabel)


@_styled
def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], split: str) -> Figure:
    """Counts with each true class's row coloured by its share (recall)."""
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.55 * len(labels)
    fig = Figure(figsize=(size + 0.9, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            f"{int(value)}",
            ha="center",
            va="center",
            fontsize=10,
            color="white" if shares[i, j] > 0.55 else "#1f2933",
        )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({split})")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of true class")
    return fig


@_styled
def per_class_accuracy(per_class: dict[str, dict[str, Any]], labels: Sequence[str]) -> Figure:
    """Grouped bars: accuracy of each class in each split."""
    splits = [s for s in SPLIT_COLOURS if s in per_class]
    groups = [*labels, "total"]
    fig = Figure(figsize=(max(4.6, 1.0 + 0.8 * len(groups)), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(splits), 1)
    for k, split in enumerate(splits):
        values = [per_class[split].get(g, {}).get("accuracy", np.nan) for g in groups]
        xs = np.arange(len(groups)) + (k - (len(splits) - 1) / 2) * width
        ax.bar(
            xs,
            np.asarray(values, dtype=float) * 100,
            width,
            label=split,
            color=SPLIT_COLOURS[split],
        )
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylim=(0, 105), ylabel="accuracy (%)", title="Accuracy per class")
    ax.yaxis.grid(True)
    ax.set_axisbelow(True)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncols=len(splits))
    return fig


@_styled
def training_curves(history: Sequence[dict[str, Any]], best_epoch: int | None) -> Figure:
    """Accuracy and loss per epoch, training against validation, best epoch marked."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2)
    for ax, metric, unit in ((acc_ax, "accuracy", "accuracy (%)"), (loss_ax, "loss", "loss")):
        scale = 100 if metric == "accuracy" else 1
        for split, key in (("training", "train"), ("validation", "validation")):
            values = [row.get(f"{key}_{metric}") for row in history]
            ys = np.asarray([np.nan if v is None else v * scale for v in values], dtype=float)
            ax.plot(
                epochs,
                ys,
                marker="o",
                markersize=3,
                linewidth=1.6,
                color=SPLIT_COLOURS[split],
                label=split,
            )
        _mark_lr_changes(ax, history)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="#1f2933", linestyle="--", linewidth=1)
            ax.text(
                best_epoch,
                1.01,
                f" best epoch {best_epoch}",
                transform=ax.get_xaxis_transform(),
                fontsize=9,
                va="bottom",
                ha="center",
            )
        ax.set(xlabel="epoch", ylabel=unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.grid(True)
        ax.set_axisbelow(True)
    acc_ax.legend(loc="lower right")
    if best_epoch is not None:
        row = next((r for r in history if r["epoch"] == best_epoch), None)
        if row and row.get("validation_accuracy") is not None:
            acc_ax.plot(
                [best_epoch],
                [row["validation_accuracy"] * 100],
                marker="*",
                markersize=14,
                color=SPLIT_COLOURS["validation"],
                zorder=5,
            )
    return fig


def _mark_lr_changes(ax: Any, history: Sequence[dict[str, Any]]) -> None:
    for before, after in pairwise(history):
        old, new = before.get("learning_rate"), after.get("learning_rate")
        if old is not None and new is not None and new != old:
            ax.axvline(after["epoch"] - 0.5, color="#9aa5b1", linestyle=":", linewidth=1)
            ax.text(
                after["epoch"] - 0.5,
                0.02,
                f" lr {new:g}",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                color="#62707d",
                rotation=90,
                va="bottom",
                ha="right",
            )


@_styled
def budget_bars(fit: Sequence[dict[str, Any]], board: dict[str, Any]) -> Figure:
    """Flash and RAM used per bit width as a share of the board's capacity; red does not fit."""
    rows = sorted(fit, key=lambda r: -r["bits"])
    fig = Figure(figsize=(11, 0.6 + 0.55 * len(rows)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    names = [f"{r['bits']}-bit" for r in rows]
    for ax, memory in zip(axes, ("flash", "ram"), strict=True):
        capacity = board.get("usable_flash_bytes") if memory == "flash" else None
        capacity = capacity or board.get(f"{memory}_bytes")
        percents = [float(r[f"{memory}_percent"]) for r in rows]
        colours = [FIT_COLOUR if p <= 100 else NO_FIT_COLOUR for p in percents]
        ys = np.arange(len(rows))
        ax.barh(ys, [min(p, 100) for p in percents], color=colours, height=0.6)
        ax.barh(ys, [100] * len(rows), color="none", edgecolor="#9aa5b1", height=0.6)
        for y, p, r in zip(ys, percents, rows, strict=True):
            inside = p > 55
            ax.text(
                min(p, 100) + (-1 if inside else 1),
                y,
                f"{p:.1f} %  ({r[f'{memory}_bytes']:,} B)",
                va="center",
                ha="right" if inside else "left",
                fontsize=9,
                color="white" if inside else "#1f2933",
            )
        total = f"{capacity / 1024:,.0f} KiB" if capacity else "capacity unknown"
        ax.set(
            xlim=(0, 100),
            xlabel="% of capacity",
            title=f"{'Flash' if memory == 'flash' else 'RAM'} ({total})",
        )
        ax.set_yticks(ys, names)
        ax.invert_yaxis()
        ax.spines[["left"]].set_visible(False)
        ax.tick_params(axis="y", length=0)
    return fig


@_styled
def operator_bars(operators: Sequence[dict[str, Any]]) -> Figure:
    """Self CPU time of the busiest operators."""
    rows = sorted(operators, key=lambda r: -r["self_cpu_ms"])
    fig = Figure(figsize=(5, 0.9 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(rows))
    ax.barh(ys, [r["self_cpu_ms"] for r in rows], color="#2f6fb3", height=0.65)
    ax.set_yticks(ys, [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="self CPU time (ms)", title="Busiest operators")
    ax.xaxis.grid(True)
    ax.set_axisbelow(True)
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none is as small (x) and more accurate (y).

    Returned in order of increasing x; ties in x keep the more accurate point.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


RECIPE_MARKERS = "osD^vP<>Xhp*"


@_styled
def pareto(rows: Sequence[dict[str, Any]], axes_keys: Sequence[tuple[str, str]]) -> Figure:
    """Test accuracy against each cost in ``axes_keys`` (``(row key, axis label)``), one point
    per variant, coloured by recipe; the Pareto front is drawn as a line, the float model as a
    star."""
    fig = Figure(figsize=(5.6 * len(axes_keys), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(axes_keys)))
    recipes = sorted({r["recipe"] for r in rows if r["recipe"] != "float"})
    colours = matplotlib.colormaps["tab10"]
    for ax, (key, label) in zip(axes, axes_keys, strict=True):
        usable = [r for r in rows if r.get(key) and r.get("accuracy")]
        points = [(float(r[key]), 100 * r["accuracy"]["testing"]) for r in usable]
        for n, recipe in enumerate(recipes):
            mine = [p for p, r in zip(points, usable, strict=True) if r["recipe"] == recipe]
            if mine:
                xs, ys = zip(*mine, strict=True)
                ax.scatter(
                    xs,
                    ys,
                    s=28,
                    marker=RECIPE_MARKERS[n % len(RECIPE_MARKERS)],
                    color=colours(n % 10),
                    alpha=0.8,
                    label=recipe,
                )
        front = [points[i] for i in pareto_front(points)]
        if front:
            xs, ys = zip(*front, strict=True)
            ax.step(xs, ys, where="post", color="#1f2933", linewidth=1.4, label="Pareto front")
            ax.scatter(xs, ys, s=60, facecolors="none", edgecolors="#1f2933", linewidths=1.2)
        for p, r in zip(points, usable, strict=True):
            if r["recipe"] == "float":
                ax.scatter(*p, s=180, marker="*", color="#c8372d", zorder=5, label="float")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_human))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=label, ylabel="test accuracy (%)", title=f"Accuracy vs {label}")
        ax.yaxis.grid(True)
        ax.set_axisbelow(True)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8, loc="best")
    return fig


def _human(value: float, _position: int) -> str:
    """Axis labels like ``4k``, ``20k``, ``1.2M``."""
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
