"""The onnx and tflite exporters (Keras route), TFLM verification and the arena search."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from kwscompress.errors import KwsError
from kwscompress.models.ds_cnn import DsCnn
from kwscompress.models.tiny_conv import TinyConv
from kwscompress.plugins import PluginManager
from kwscompress.protocols import Exporter, ExportInputs
from kwscompress_tflite import arena
from kwscompress_tflite.tflite_exporter import FORBIDDEN_OPS

SHAPE = (49, 40)
LABELS = ["_silence_", "_unknown_", "yes", "no"]


def _clips(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features in micro's range (0..26) where each class lights its own band of bins."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), count)
    features = rng.uniform(0, 6, (count, *SHAPE))
    for clip, label in zip(features, labels, strict=True):
        start = rng.integers(5, 30)
        clip[start : start + 15, 8 * label + 2 : 8 * label + 8] += rng.uniform(10, 20)
    return features.astype(np.float32), labels


def _inputs(model: nn.Module, variant: str = "float", clips: int = 120) -> ExportInputs:
    train, _ = _clips(200, 1)
    test, test_labels = _clips(clips, 2)
    return ExportInputs(
        variant_id=variant,
        model=model,
        weight_bits=32,
        labels=LABELS,
        input_shape=SHAPE,
        representative=train,
        test_features=test,
        test_labels=test_labels,
    )


def _randomize_batch_norm(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


def _masked_tiny_conv() -> TinyConv:
    model = TinyConv(SHAPE, 4)
    prune.l1_unstructured(model.conv, "weight", amount=0.5)
    prune.l1_unstructured(model.fc, "weight", amount=0.7)
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> TinyConv:
    """A TinyConv (4 channels) trained for a few seconds on the banded clips."""
    torch.manual_seed(0)
    model = TinyConv(SHAPE, len(LABELS), channels=4)
    features, labels = _clips(400, 0)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = slice(32 * step % 384, 32 * step % 384 + 32)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def keras_export(trained: TinyConv, tmp_path_factory) -> tuple[dict, Path]:
    from kwscompress_tflite.tflite_exporter import TfliteExporter

    out = tmp_path_factory.mktemp("tflite")
    return TfliteExporter().export(_inputs(trained, clips=300), out), out


def test_exporters_are_registered(pm: PluginManager) -> None:
    for name in ("onnx", "tflite"):
        assert isinstance(pm.component("exporter", name), Exporter)
    assert pm.components("report_section")["deployment"].component.order == 90


@pytest.mark.parametrize(
    "build",
    [
        lambda: TinyConv(SHAPE, 4).eval(),
        lambda: TinyConv(SHAPE, 4, channels=3).eval(),  # channel-pruned: 3 of 8 kept
        _masked_tiny_conv,
        lambda: _randomize_batch_norm(DsCnn(SHAPE, 4)),
    ],
    ids=["tiny_conv", "tiny_conv-3ch", "tiny_conv-masked", "ds_cnn"],
)
def test_onnx_passes_the_checker_and_matches_pytorch(pm, build, tmp_path: Path) -> None:
    torch.manual_seed(0)
    exporter = pm.component("exporter", "onnx")
    inputs = _inputs(build(), clips=40)
    assert exporter.applies_to(inputs)
    record = exporter.export(inputs, tmp_path)
    assert (tmp_path / record["files"]["onnx"]).stat().st_size == record["onnx_bytes"]
    assert record["checker"] == "passed" and record["clips"] == 40
    assert record["max_abs_diff"] <= 1e-5 and record["agrees"]
    assert record["opset"] >= 13
    # No source path of this machine in the file (torch writes each node's stack trace).
    source_dir = str(Path(TinyConv.__module__.replace(".", "/")).parent)
    assert source_dir.encode() not in (tmp_path / record["files"]["onnx"]).read_bytes()


def test_onnx_does_not_take_fake_quantized_models(pm) -> None:
    inputs = _inputs(TinyConv(SHAPE, 4))
    inputs.weight_bits = 8
    assert not pm.component("exporter", "onnx").applies_to(inputs)


def test_keras_route_gives_a_clean_full_int8_graph(keras_export) -> None:
    record, out = keras_export
    assert record["route"] == "keras"
    assert (out / record["files"]["tflite"]).stat().st_size == record["tflite_bytes"]
    assert not set(record["ops"]) & FORBIDDEN_OPS
    assert record["ops"] == ["RESHAPE", "PAD", "CONV_2D", "FULLY_CONNECTED", "SOFTMAX"]
    assert record["input"]["shape"] == [1, 49 * 40] and record["input"]["dtype"] == "int8"
    assert record["buffers_aligned_16"]
    assert record["output"] == {
        "shape": [1, 4],
        "dtype": "int8",
        "scale": 1 / 256,
        "zero_point": -128,
    }
    weights = record["weights"]
    # Convolution per channel; fully connected per tensor, which every TFLM version runs.
    assert weights["int8_weight_tensors"] == 2 and weights["per_channel_weight_tensors"] == 1
    assert not weights["per_channel_fully_connected"]
    assert weights["bias_dtypes"] == ["int32"]


def test_keras_route_runs_identically_in_tflm_and_agrees_with_the_float_model(keras_export) -> None:
    record, _ = keras_export
    assert record["clips"] == 300
    # Exact on these clips. In general TFLite 2.21 can differ from TFLM by one LSB where a
    # per-tensor FULLY_CONNECTED output sits on a rounding boundary (see docs/export.rst).
    assert record["tflm_vs_tflite"] == {
        "interpreter": record["tflm_vs_tflite"]["interpreter"],
        "outputs_differ": 0,
        "top1_differs": 0,
    }
    assert record["model_agreement"]["top1_agree"] >= 0.95
    assert record["int8_accuracy"] >= 0.8


def test_arena_search_returns_the_smallest_size_that_works(keras_export) -> None:
    record, out = keras_export
    size = record["arena_bytes"]
    assert size % arena.STEP == 0 and 1000 < size < 64 * 1024

    def works(arena_bytes: int) -> bool:
        script = (
            "import sys; from tflite_micro import runtime; import numpy as np\n"
            f"i = runtime.Interpreter.from_file({str(out / record['files']['tflite'])!r}, "
            f"arena_size={arena_bytes})\n"
            "i.set_input(np.zeros((1, 1960), np.int8), 0); i.invoke()\n"
        )
        return subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0

    assert works(size)
    assert not works(size - arena.STEP)


def test_keras_route_handles_ds_cnn_with_batch_norm(tmp_path: Path) -> None:
    from kwscompress_tflite.tflite_exporter import TfliteExporter

    torch.manual_seed(0)
    model = _randomize_batch_norm(DsCnn(SHAPE, 4))
    record = TfliteExporter().export(_inputs(model, "ds", clips=20), tmp_path)
    assert "DEPTHWISE_CONV_2D" in record["ops"] and "AVERAGE_POOL_2D" in record["ops"]
    assert not set(record["ops"]) & FORBIDDEN_OPS
    assert record["tflm_vs_tflite"]["outputs_differ"] == 0


def test_a_files_bytes_do_not_depend_on_what_was_exported_before(
    trained: TinyConv, keras_export: tuple[dict, Path], tmp_path: Path
) -> None:
    """Keras names layers after those built before; the file's tensor names must not follow."""
    from kwscompress_tflite.tflite_exporter import TfliteExporter

    record, out = keras_export
    first = (out / record["files"]["tflite"]).read_bytes()
    TfliteExporter().export(_inputs(DsCnn(SHAPE, 4).eval(), "ds", clips=5), tmp_path / "ds")
    again = TfliteExporter().export(_inputs(trained, clips=300), tmp_path / "again")
    assert (tmp_path / "again" / again["files"]["tflite"]).read_bytes() == first


def test_tflite_route_errors_name_the_variant_and_model_class(pm, tmp_path: Path) -> None:
    exporter = pm.component("exporter", "tflite")
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(49 * 40, 4))
    with pytest.raises(KwsError, match=r"variant 'mlp'.*Sequential.*TinyConv, DsCnn"):
        exporter.export(_inputs(mlp, "mlp"), tmp_path)
    fake = _inputs(TinyConv(SHAPE, 4), "ptq-4b")
    fake.weight_bits = 4
    assert not exporter.applies_to(fake)
    with pytest.raises(KwsError, match=r"variant 'ptq-4b'.*TinyConv.*int_graph"):
        exporter.export(fake, tmp_path)


def test_deployment_section_shows_measured_beside_estimated(pm, keras_export, tmp_path) -> None:
    from kwscompress.run import Run

    record, _ = keras_export
    section = pm.component("report_section", "deployment")
    run = Run(tmp_path / "run")
    run.results["variants"] = [{"id": "float", "weight_bytes": 66_608, "status": "ok"}]
    assert section.render(run) is None
    run.results["estimate"] = {
        "board": {
            "title": "Nano",
            "flash_bytes": 1_048_576,
            "ram_bytes": 262_144,
            "sketch_flash_bytes": 983_040,
        },
        "fit": [{"bits": 8, "weight_bytes": 16_652}],
        "memory": {"peak_activation_bytes": {"int8": 5_960}},
    }
    run.results["variants"][0].update(
        export={
            "tflite": record,
            "onnx": {"checker": "passed", "max_abs_diff": 2e-7, "agrees": True, "opset": 20},
        },
        deploy={
            "tflite_bytes": record["tflite_bytes"],
            "arena_bytes": record["arena_bytes"],
            "firmware": "deploy/float/sketch",
        },
    )
    content = section.render(run)
    share = f"{100 * record['tflite_bytes'] / 983_040:.2f} % of the board"
    for text in (
        f"{record['tflite_bytes']:,} B",
        share,
        "16,652 B",
        f"{record['arena_bytes']:,} B",
        "5,960 B",
        "0 / 0 differ",
        "checker passed",
        "deploy/float/sketch",
        "keras",
        "stored as int8",
        "PAD, CONV_2D",
    ):
        assert text in content.markdown, text


@pytest.mark.parametrize(
    "build",
    [lambda: TinyConv(SHAPE, 4, channels=5).eval(), lambda: _randomize_batch_norm(DsCnn(SHAPE, 4))],
    ids=["tiny_conv", "ds_cnn"],
)
def test_keras_rebuild_computes_what_pytorch_computes(build) -> None:
    """Flatten order, padding and batch-norm folding: the float Keras model equals PyTorch."""
    from kwscompress_tflite.keras_route import to_keras

    torch.manual_seed(0)
    model = build()
    features, _ = _clips(4, 3)
    keras_model = to_keras(model, "float")
    got = np.concatenate([np.asarray(keras_model(clip.reshape(1, -1))) for clip in features])
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(features)), dim=1).numpy()
    assert np.abs(got - want).max() < 1e-5
