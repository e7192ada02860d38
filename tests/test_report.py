"""The analysis report: every section renders from a results.json, failures are contained, and
the HTML is self-contained and displays in a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from support import browser_result

from kwscompress import hookimpl
from kwscompress.errors import KwsError
from kwscompress.plugins import get_plugin_manager
from kwscompress.protocols import SectionContent
from kwscompress.report import blocks, load_run, write_report
from kwscompress.run import Run, write_json

SAMPLE_RATE = 16000
LABELS = ["_silence_", "_unknown_", "yes", "no"]
BUILTIN_TITLES = [
    "Overview",
    "Preprocessing",
    "Dataset",
    "Accuracy",
    "Training curves",
    "Cost estimate",
    "Host latency",
]
# Per word: (file, tone frequency, amplitude); the report must pick 0.6 as loud and 0.02 as quiet.
CLIPS = [("a_nohash_0.wav", 0.25), ("b_nohash_0.wav", 0.6), ("c_nohash_0.wav", 0.02)]


class FakeMicro:
    """Stands in for the micro frontend when the real one is not installed: [N, 49, 40]."""

    name = "micro"
    description = "test stand-in: log band energies"

    def settings(self, config, sample_rate):
        return {}

    def extract(self, audio, config, sample_rate):
        frames = np.stack([audio[:, i * 320 : i * 320 + 480] for i in range(49)], axis=1)
        spectrum = np.abs(np.fft.rfft(frames, axis=-1))[..., :240].reshape(*frames.shape[:2], 40, 6)
        return np.log1p(spectrum.sum(-1)).astype(np.float32)


class FakeMicroPlugin:
    @hookimpl
    def kws_register_feature_extractors(self):
        return [FakeMicro()]


def _clip(freq: float, amplitude: float, seed: int) -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    envelope = np.exp(-(((t - 0.5) / 0.18) ** 2))
    noise = np.random.default_rng(seed).normal(0, 0.01, SAMPLE_RATE)
    return (amplitude * envelope * np.sin(2 * np.pi * freq * t) + amplitude * noise).astype(
        np.float32
    )


def _per_class(samples: list[int], correct: list[int]) -> dict:
    table = {
        label: {"samples": n, "correct": c, "accuracy": c / n}
        for label, n, c in zip(LABELS, samples, correct, strict=True)
    }
    table["total"] = {
        "samples": sum(samples),
        "correct": sum(correct),
        "accuracy": sum(correct) / sum(samples),
    }
    return table


def _results(data_root: Path) -> dict:
    history = [
        {
            "epoch": e,
            "train_loss": 1.2 / e,
            "train_accuracy": 0.5 + 0.08 * e,
            "validation_loss": 1.1 / e + 0.05,
            "validation_accuracy": 0.48 + 0.08 * e - (0.1 if e == 5 else 0),
            "learning_rate": 0.001 if e < 4 else 0.0001,
            "seconds": 2.5,
        }
        for e in range(1, 6)
    ]
    fit = [
        {
            "bits": b,
            "weight_bytes": 16652 * b // 8,
            "flash_bytes": 16652 * b // 8 + 60000,
            "flash_percent": (16652 * b // 8 + 60000) / 1048576 * 100,
            "ram_bytes": 4000 * b // 8 + 12000,
            "ram_percent": (4000 * b // 8 + 12000) / 2621.44,
            "fits": True,
            "verdict": "fits",
        }
        for b in (32, 8, 4)
    ]
    return {
        "schema": 1,
        "config": {"run": {"name": "report-test"}, "train": {"epochs": 5}},
        "versions": {"kwscompress": "0.1.0", "torch": "2.14.1"},
        "data": {
            "root": str(data_root),
            "split_summary": {
                "training": {"_silence_": 40, "_unknown_": 40, "yes": 60, "no": 58, "total": 198},
                "validation": {"_silence_": 5, "_unknown_": 5, "yes": 8, "no": 7, "total": 25},
                "testing": {"_silence_": 5, "_unknown_": 5, "yes": 7, "no": 8, "total": 25},
            },
            "skipped_files": {
                "count": 1,
                "files": [{"path": "yes/broken_nohash_0.wav", "reason": "empty: no samples"}],
            },
        },
        "train": {"history": history, "best_epoch": 4},
        "evaluate": {
            "model": "tiny_conv",
            "accuracy": {"training": 0.903, "validation": 0.88, "testing": 0.84},
            "per_class": {
                "training": _per_class([40, 40, 60, 58], [39, 30, 56, 54]),
                "validation": _per_class([5, 5, 8, 7], [5, 3, 7, 7]),
                "testing": _per_class([5, 5, 7, 8], [5, 3, 6, 7]),
            },
            "confusion": {"testing": [[5, 0, 0, 0], [1, 3, 1, 0], [0, 1, 6, 0], [0, 1, 0, 7]]},
            "labels": LABELS,
            "held_out_voices": {
                "families": ["en-us", "en-gb"],
                "held_out_accuracy": 0.81,
                "seen_accuracy": 0.86,
                "held_out_samples": 12,
            },
            "reference_clips": {
                "clips": [
                    {
                        "file": "yes_1000ms.wav",
                        "expected": "yes",
                        "predicted": "yes",
                        "scores": {"_silence_": 0.01, "_unknown_": 0.04, "yes": 0.9, "no": 0.05},
                    },
                    {
                        "file": "no_1000ms.wav",
                        "expected": "no",
                        "predicted": "_unknown_",
                        "scores": {"_silence_": 0.01, "_unknown_": 0.6, "yes": 0.09, "no": 0.3},
                    },
                ],
                "all_correct": False,
            },
        },
        "estimate": {
            "label": "estimate",
            "estimator": "fvcore",
            "model": "tiny_conv",
            "input_shape": [1, 49, 40],
            "flop_convention": "2 x MACs + one add per output element for the bias",
            "layers": [
                {
                    "name": "conv",
                    "type": "Conv2d",
                    "parameters": 648,
                    "macs": 320000,
                    "flops": 644000,
                    "output_elements": 4000,
                    "output_shape": [1, 8, 25, 20],
                },
                {
                    "name": "fc",
                    "type": "Linear",
                    "parameters": 16004,
                    "macs": 16000,
                    "flops": 32004,
                    "output_elements": 4,
                    "output_shape": [1, 4],
                },
            ],
            "total": {"parameters": 16652, "macs": 336000, "flops": 676004},
            "memory": {
                "peak_activation_bytes": {"fp32": 23840, "int8": 5960},
                "peak_at_layer": "conv",
                "simple_forward_bytes": 7856,
                "simple_forward_definition": "(input + output elements) x 4 bytes",
            },
            "board": {
                "name": "nano33ble",
                "title": "Arduino Nano 33 BLE Sense",
                "core": "Cortex-M4F",
                "clock_hz": 64000000,
                "flash_bytes": 1048576,
                "ram_bytes": 262144,
            },
            "fit": fit,
            "throughput": {
                "flops_per_second": 3.125e12,
                "passes_per_second": 4.6e6,
                "line": "3.125 TFLOP/s / 676,004 FLOP = 4.6 million passes/s",
            },
        },
        "profile": {
            "device": "cpu",
            "threads": 2,
            "batch": 1,
            "runs": 200,
            "warmup": 20,
            "median_ms": 0.21,
            "p10_ms": 0.19,
            "p90_ms": 0.27,
            "operators": [
                {"name": "aten::mkldnn_convolution", "self_cpu_ms": 0.08, "calls": 1},
                {"name": "aten::addmm", "self_cpu_ms": 0.03, "calls": 1},
                {"name": "aten::relu", "self_cpu_ms": 0.01, "calls": 1},
            ],
            "cuda": None,
            "note": "no GPU",
        },
    }


@pytest.fixture(scope="module")
def plugin_manager():
    pm = get_plugin_manager()
    if "micro" not in pm.components("feature_extractor"):
        pm.register(FakeMicroPlugin(), name="fake-micro")
    return pm


def _make_run(base: Path, results: dict | None = None) -> Path:
    data_root = base / "data"
    for w, word in enumerate(("yes", "no")):
        (data_root / word).mkdir(parents=True)
        for c, (name, amplitude) in enumerate(CLIPS):
            audio = _clip(300 + 200 * w + 50 * c, amplitude, seed=10 * w + c)
            soundfile.write(data_root / word / name, audio, SAMPLE_RATE, subtype="PCM_16")
    run_path = base / "run"
    run_path.mkdir()
    write_json(run_path / "results.json", results or _results(data_root))
    return run_path


@pytest.fixture(scope="module")
def rendered(plugin_manager, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """One full report, shared by the tests that only read it (rendering takes seconds)."""
    run_path = _make_run(tmp_path_factory.mktemp("report"))
    return run_path, write_report(Run(run_path), plugin_manager)


@pytest.fixture
def extra_plugin(plugin_manager):
    """Register ad-hoc plugins for one test and always unregister them."""
    added = []

    def register(plugin: object, name: str) -> None:
        plugin_manager.register(plugin, name=name)
        added.append(plugin)

    yield register
    for plugin in added:
        plugin_manager.unregister(plugin)


class _Section:
    def __init__(self, name: str, title: str, order: int, render):
        self.name, self.title, self.order = name, title, order
        self.description = f"test section {name}"
        self._render = render

    def render(self, run):
        return self._render(run)


def test_every_section_renders_into_both_files(rendered):
    run_path, paths = rendered
    assert paths == {"html": run_path / "report.html", "markdown": run_path / "report.md"}
    page = paths["html"].read_text("utf-8")
    markdown = paths["markdown"].read_text("utf-8")
    titles = re.findall(r'<section class="report-section[^"]*"[^>]*>\s*<h2>([^<]+)</h2>', page)
    assert titles == BUILTIN_TITLES
    for title in BUILTIN_TITLES:
        assert f"## {title}" in markdown
    assert 'class="error-box"' not in page
    assert json.loads((run_path / "results.json").read_text())["report"]["errors"] == []


def test_html_is_self_contained_and_markdown_links_the_pngs(rendered):
    run_path, paths = rendered
    page = paths["html"].read_text("utf-8")
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    expected = {
        "preprocessing-yes",
        "preprocessing-no",
        "confusion",
        "per-class-accuracy",
        "training-curves",
        "board-budget",
        "host-operators",
    }
    assert len(sources) == len(expected)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(?:href|src)="(?!data:|#)', page)  # nothing to fetch, not even CSS
    linked = set(re.findall(r"\]\(plots/([a-z0-9_-]+)\.png\)", paths["markdown"].read_text()))
    assert linked == expected
    for name in expected:
        assert (run_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_carry_the_numbers(rendered):
    _, paths = rendered
    markdown = paths["markdown"].read_text("utf-8")
    assert "| training | 40 | 40 | 60 | 58 | 198 (79.8 % of clips) |" in markdown
    assert "| yes | 93.3 % (56 / 60) | 87.5 % (7 / 8) | 85.7 % (6 / 7) |" in markdown
    assert "| **total** |  |  | **16,652** | **336,000** | **676,004** |" in markdown
    assert "not measured yet" in markdown
    assert f"| CUDA | {blocks.MISSING} | no GPU |" in markdown
    assert "No model-input column" not in markdown  # the micro features were drawn
    # The quiet and loud examples are the 0.02 and 0.6 amplitude clips.
    assert "loud b_nohash_0.wav" in markdown and "quiet c_nohash_0.wav" in markdown


def test_measured_value_stands_beside_the_estimate(plugin_manager, tmp_path):
    results = _results(tmp_path / "missing-data")
    results["variants"] = [{"id": "float", "deploy": {"tflite_bytes": 19_544}}]
    run = Run(_make_run(tmp_path, results))
    markdown = write_report(run, plugin_manager)["markdown"].read_text("utf-8")
    assert "| int8 model in flash | 76,652 B (74.9 KiB) | 19,544 B (19.1 KiB) |" in markdown
    assert "| int8 RAM (tensor arena) | 16,000 B (15.6 KiB) | not measured yet |" in markdown
    assert "no longer exists" in markdown  # the data folder is gone: a note, not a crash


def test_partial_run_leaves_missing_sections_out(plugin_manager, tmp_path):
    run = Run(tmp_path)
    run.record("profile", _results(tmp_path)["profile"])
    page = write_report(run, plugin_manager)["html"].read_text("utf-8")
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    assert titles == ["Overview", "Host latency"]


def test_failing_section_becomes_an_error_box_and_plugin_sections_slot_in(
    plugin_manager, extra_plugin, tmp_path
):
    def broken(run):
        raise RuntimeError("sweep results are corrupt")

    def sweep(run):
        return blocks.combine(
            blocks.paragraph("8 variants compared."),
            blocks.table(["variant", "accuracy"], [["qat-4b", "88.1 %"]]),
        )

    class SweepPlugin:
        @hookimpl
        def kws_register_report_sections(self):
            return [
                _Section("sweep", "Compression sweep", 75, sweep),
                _Section("exploding", "Exploding", 15, broken),
                _Section("nothing", "Nothing yet", 5, lambda run: None),
            ]

    extra_plugin(SweepPlugin(), "sweep-plugin")
    run = Run(_make_run(tmp_path, _results(tmp_path / "no-clips")))
    page = write_report(run, plugin_manager)["html"].read_text("utf-8")
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    assert titles == ["Overview", "Exploding", *BUILTIN_TITLES[1:], "Compression sweep"]
    box = re.search(r'<section[^>]*id="exploding"[^>]*>.*?</section>', page, re.S).group(0)
    assert (
        'class="error-box"' in box and "sweep-plugin" in box and "sweep results are corrupt" in box
    )
    assert "8 variants compared." in page and "Nothing yet" not in page
    errors = json.loads(run.results_path.read_text())["report"]["errors"]
    assert errors == [
        {
            "plugin": "sweep-plugin",
            "section": "exploding",
            "error": "RuntimeError: sweep results are corrupt",
        }
    ]


def test_section_html_image_outside_the_run_is_an_error(plugin_manager, extra_plugin, tmp_path):
    class LeakyPlugin:
        @hookimpl
        def kws_register_report_sections(self):
            return [
                _Section(
                    "leaky",
                    "Leaky",
                    99,
                    lambda run: SectionContent('<img src="/etc/hostname">', ""),
                )
            ]

    extra_plugin(LeakyPlugin(), "leaky-plugin")
    run = Run(tmp_path)
    run.save()
    page = write_report(run, plugin_manager)["html"].read_text("utf-8")
    assert "is not a file inside the run directory" in page
    assert "/etc/hostname" not in re.sub(r"<(details|code)>.*?</\1>", "", page, flags=re.S)


def test_run_without_results_is_a_user_error(tmp_path):
    with pytest.raises(KwsError, match=r"no results\.json"):
        load_run(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(KwsError, match=r"results\.json"):
        write_report(Run(tmp_path / "empty"))


_CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.alt);
  const sections = [...document.querySelectorAll("section.report-section")];
  const empty = sections.filter((s) => {
    const body = s.querySelector(".section-body");
    return !body || (body.innerText.trim() === "" && !body.querySelector("img"));
  }).map((s) => s.id);
  const out = document.createElement("pre");
  out.id = "kws-check";
  out.textContent = JSON.stringify({images: images.length, broken, empty,
    sections: sections.map((s) => s.id),
    widths: images.map((img) => img.naturalWidth)});
  document.body.appendChild(out);
});
</script>"""


def test_report_displays_in_headless_chromium(rendered, tmp_path):
    _, paths = rendered
    page = paths["html"].read_text("utf-8").replace("</body>", _CHECK_SCRIPT + "</body>")
    check = browser_result(page, tmp_path, "kws-check")
    assert check["sections"] == [
        "overview",
        "preprocessing",
        "dataset",
        "accuracy",
        "training",
        "estimate",
        "latency",
    ]
    assert check["images"] == 7 and check["broken"] == [] and check["empty"] == []
    assert min(check["widths"]) > 300


def test_training_section_names_the_word_head(plugin_manager, tmp_path):
    results = _results(tmp_path / "data")
    results["config"]["train"]["word_head"] = 0.25
    results["train"]["word_classes"] = 58
    page = write_report(Run(_make_run(tmp_path, results)), plugin_manager)["html"]
    assert "58 words" in page.read_text("utf-8")
    assert "training loss includes 0.25 x its loss" in page.read_text("utf-8")
    del results["train"]["word_classes"]
    page = write_report(Run(_make_run(tmp_path / "plain", results)), plugin_manager)["html"]
    assert "word head" not in page.read_text("utf-8")
