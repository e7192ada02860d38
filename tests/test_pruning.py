"""The built-in pruners (magnitude, channel) and the "Pruning" report section."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from kwscompress.compress.context import StepContext
from kwscompress.config import TrainConfig
from kwscompress.errors import ConfigError
from kwscompress.models.ds_cnn import DsCnn
from kwscompress.models.tiny_conv import TinyConv
from kwscompress.protocols import Pruner, ReportSection
from kwscompress.report.blocks import MISSING
from kwscompress.run import Run
from kwscompress.train import LabeledFeatures
from kwscompress_torch_pruning import make_pruning_permanent
from kwscompress_torch_pruning.common import count_to_remove
from kwscompress_torch_pruning.encodings import LayerSparsity, encoding_sizes

SHAPE = (49, 40)
LABELS = ["_silence_", "_unknown_", "yes", "no"]


def tiny_conv(seed: int = 0, channels: int = 8) -> TinyConv:
    torch.manual_seed(seed)
    return TinyConv(SHAPE, len(LABELS), channels=channels).eval()


def step_context(clips: int = 24) -> StepContext:
    rng = np.random.default_rng(0)

    def split(n: int) -> LabeledFeatures:
        return LabeledFeatures(
            rng.standard_normal((n, *SHAPE)).astype(np.float32),
            rng.integers(0, len(LABELS), n),
        )

    return StepContext(
        train=split(clips),
        validation=split(clips // 2),
        labels=LABELS,
        train_config=TrainConfig(epochs=1, batch_size=8),
        finetune_learning_rate=1e-2,
        seed=0,
    )


@pytest.fixture
def magnitude(pm):
    return pm.component("pruner", "magnitude")


@pytest.fixture
def channel(pm):
    return pm.component("pruner", "channel")


def prune_channels(channel, model: nn.Module, **settings):
    return channel.prune(model, step_context(4), **channel.settings(settings))


# -- registration and settings ------------------------------------------------------------------


def test_pruners_and_section_are_registered(pm):
    for name in ("magnitude", "channel"):
        assert isinstance(pm.component("pruner", name), Pruner)
    registered = pm.components("report_section")["pruning"]
    assert registered.plugin == "torch_pruning"
    assert isinstance(registered.component, ReportSection)
    assert (registered.component.title, registered.component.order) == ("Pruning", 84)


def test_settings_fill_defaults(magnitude, channel):
    assert magnitude.settings({"amount": 0.3}) == {"amount": 0.3, "scope": "global"}
    assert channel.settings({"amount": 0.5}) == {"amount": 0.5, "norm": "l1"}
    assert channel.settings({"amount": 0.5, "norm": "linf"})["norm"] == "linf"


@pytest.mark.parametrize(
    ("pruner", "values", "named"),
    [
        ("magnitude", {"amount": 0.5, "amout": 0.2}, ["'amout'", "amount, scope"]),
        ("channel", {"amount": 0.5, "bits": 4}, ["'bits'", "amount, norm"]),
        ("magnitude", {}, ["'amount'", "0 < amount < 1"]),
        ("magnitude", {"amount": 1.0}, ["'amount'", "1.0", "0 < amount < 1"]),
        ("channel", {"amount": 0}, ["'amount'", "0", "0 < amount < 1"]),
        ("channel", {"amount": -0.2}, ["'amount'", "-0.2", "0 < amount < 1"]),
        ("channel", {"amount": "half"}, ["'amount'", "'half'"]),
        ("channel", {"amount": True}, ["'amount'", "True"]),
        ("magnitude", {"amount": 0.5, "scope": "net"}, ["'scope'", "'net'", "'global', 'layer'"]),
        ("channel", {"amount": 0.5, "norm": "l3"}, ["'norm'", "'l3'", "'l1', 'l2', 'linf'"]),
    ],
)
def test_settings_errors_name_key_value_and_range(pm, pruner, values, named):
    with pytest.raises(ConfigError) as error:
        pm.component("pruner", pruner).settings(values)
    for text in named:
        assert text in str(error.value)


def test_amount_rounds_half_up_on_the_decimal_value():
    # Python's round() is banker's rounding: round(0.5) == 0 and round(4.5) == 4.
    assert count_to_remove(0.0625, 8) == 1 and round(0.0625 * 8) == 0
    assert count_to_remove(0.5, 9) == 5 and round(0.5 * 9) == 4
    assert [count_to_remove(a, 8) for a in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)] == [1, 2, 2, 4, 6, 7]
    # 0.58 * 25 is 14.499999999999998 in floats; the decimal 0.58 of 25 is 14.5, rounded up.
    assert 0.58 * 25 < 14.5 and count_to_remove(0.58, 25) == 15


@pytest.mark.parametrize("name", ["magnitude", "channel"])
def test_input_model_is_not_modified(pm, name):
    model = tiny_conv()
    before = copy.deepcopy(model.state_dict())
    pm.component("pruner", name).prune(model, step_context(4), amount=0.5)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not model.conv._forward_pre_hooks and model.conv.out_channels == 8


# -- channel ------------------------------------------------------------------------------------


def test_removing_a_zero_channel_leaves_outputs_identical(channel):
    model = tiny_conv(seed=1)
    with torch.no_grad():
        model.conv.weight[3] = 0
        model.conv.bias[3] = 0
    result = prune_channels(channel, model, amount=1 / 8)
    assert result.info["layers"][0]["kept_indices"] == [0, 1, 2, 4, 5, 6, 7]
    features = torch.randn(5, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(result.model.eval()(features), model(features))


def test_pruned_fc_keeps_the_columns_of_the_kept_channels(channel):
    model = tiny_conv(seed=2)
    result = prune_channels(channel, model, amount=0.5)
    kept = result.info["layers"][0]["kept_indices"]
    l1 = model.conv.weight.detach().abs().flatten(1).sum(1)
    assert kept == sorted(torch.topk(l1, 4).indices.tolist())

    reference = tiny_conv(channels=4)
    with torch.no_grad():
        reference.conv.weight.copy_(model.conv.weight[kept])
        reference.conv.bias.copy_(model.conv.bias[kept])
        columns = [model.fc.weight[:, 500 * c : 500 * c + 500] for c in kept]
        reference.fc.weight.copy_(torch.cat(columns, dim=1))
        reference.fc.bias.copy_(model.fc.bias)
    pruned = result.model.eval()
    assert type(pruned) is TinyConv
    assert torch.equal(pruned.fc.weight, reference.fc.weight)
    features = torch.randn(6, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(pruned(features), reference(features))


@pytest.mark.parametrize(("amount", "kept"), [(0.1, 7), (0.3, 6), (0.5, 4), (0.7, 2), (0.9, 1)])
def test_channel_pruned_tiny_conv_has_2081c_plus_4_parameters(channel, amount, kept):
    result = prune_channels(channel, tiny_conv(), amount=amount)
    model = result.model
    assert (model.conv.out_channels, model.fc.in_features) == (kept, 500 * kept)
    assert sum(p.numel() for p in model.parameters()) == 2081 * kept + 4
    assert result.info["kept_channels"] == [kept]
    assert result.info["fc_in_features"] == 500 * kept
    assert result.info["parameters"] == 2081 * kept + 4
    assert model(torch.zeros(2, *SHAPE)).shape == (2, 4)


def test_ds_cnn_still_runs_and_shrinks(channel):
    torch.manual_seed(0)
    model = DsCnn(SHAPE, 4).eval()
    result = prune_channels(channel, model, amount=0.5, norm="l2")
    pruned = result.model.eval()
    assert type(pruned) is DsCnn
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    full = [m for m in convs if m.groups == 1]
    depthwise = [m for m in convs if m.groups > 1]
    assert len(full) == 5 and len(depthwise) == 4
    assert all(m.out_channels == 32 for m in convs)
    assert all(m.groups == m.in_channels == 32 for m in depthwise)
    assert (pruned.fc.in_features, pruned.fc.out_features) == (32, 4)
    assert result.info["kept_channels"] == [32] * 5
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after == result.info["parameters"] < before == result.info["parameters_before"]
    with torch.no_grad():
        assert pruned(torch.randn(3, *SHAPE)).shape == (3, 4)
    assert step_context(8).finetune(pruned, epochs=1)["epochs"] == 1  # batch norms fit too


def test_l1_and_linf_pick_different_channels(channel):
    model = tiny_conv()
    with torch.no_grad():
        model.conv.weight.fill_(0.5)  # L1 40, Linf 0.5
        model.conv.weight[0].fill_(0.1)  # L1 8 (second smallest), Linf 0.1 (smallest)
        model.conv.weight[1].zero_()
        model.conv.weight[1, 0, 0, 0] = 1.0  # L1 1 (smallest), Linf 1 (largest)
    by_l1 = prune_channels(channel, model, amount=1 / 8, norm="l1")
    by_linf = prune_channels(channel, model, amount=1 / 8, norm="linf")
    assert by_l1.info["layers"][0]["kept_indices"] == [0, *range(2, 8)]
    assert by_linf.info["layers"][0]["kept_indices"] == list(range(1, 8))


# -- magnitude ----------------------------------------------------------------------------------


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_magnitude_global_hits_the_sparsity_exactly(magnitude, amount):
    model = tiny_conv(seed=3)
    result = magnitude.prune(model, step_context(4), amount=amount)
    pruned = weights(result.model)
    total = sum(w.numel() for w in pruned)
    zeros = sum(int((w == 0).sum()) for w in pruned)
    assert total == 640 + 16000
    assert zeros == math.floor(amount * total + 0.5) == result.info["zero_weights"]
    assert result.info["nonzero_weights"] == total - zeros
    assert result.info["sparsity"] == zeros / total
    # The zeroed weights are the smallest |w| of the original model, over all layers together.
    original = torch.cat([w.flatten().abs() for w in weights(model)])
    mask = torch.cat([w.flatten() == 0 for w in pruned])
    assert original[mask].max() <= original[~mask].min()
    assert model.fc.bias.count_nonzero() == 4  # biases are not pruned
    assert torch.equal(result.model.fc.bias, model.fc.bias)


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9])
def test_magnitude_per_layer_hits_the_sparsity_of_each_layer(magnitude, amount):
    result = magnitude.prune(tiny_conv(seed=4), step_context(4), amount=amount, scope="layer")
    for weight, layer in zip(weights(result.model), result.info["layers"], strict=True):
        assert int((weight == 0).sum()) == math.floor(amount * weight.numel() + 0.5)
        assert layer["nonzero"] == int(weight.count_nonzero())


def test_magnitude_zeros_survive_finetuning(magnitude):
    context = step_context()
    result = magnitude.prune(tiny_conv(seed=5), context, amount=0.7)
    model = result.model
    zero_before = [w == 0 for w in weights(model)]
    orig_before = model.fc.weight_orig.detach().clone()
    summary = context.finetune(model, epochs=1)
    assert summary["epochs"] == 1
    assert not torch.equal(model.fc.weight_orig, orig_before), "fine-tuning changed nothing"
    for was_zero, weight in zip(zero_before, weights(model), strict=True):
        assert torch.equal(weight == 0, was_zero)
    assert make_pruning_permanent(model) == ["conv.weight", "fc.weight"]
    assert not any(prune.is_pruned(m) for m in model.modules())
    assert "fc.weight_orig" not in model.state_dict()
    for was_zero, weight in zip(zero_before, weights(model), strict=True):
        assert torch.equal(weight == 0, was_zero)


def test_masked_models_copy_and_prune_again(magnitude, channel):
    masked = magnitude.prune(tiny_conv(seed=7), step_context(4), amount=0.5).model
    copy.deepcopy(masked)  # the core may copy a variant's model
    masked.train()(torch.randn(2, *SHAPE)).sum().backward()  # weight is a non-leaf tensor now
    again = magnitude.prune(masked, step_context(4), amount=0.7)
    # Earlier zeros count: the result has the requested sparsity, not 0.7 of what was left.
    assert again.info["zero_weights"] == math.floor(0.7 * 16640 + 0.5)
    smaller = channel.prune(masked, step_context(4), amount=0.5).model
    assert not prune.is_pruned(smaller) and smaller.conv.out_channels == 4
    assert prune.is_pruned(masked) and sum(int((w == 0).sum()) for w in weights(masked)) == 8320


def test_sparse_encoding_sizes():
    layer = LayerSparsity.of("w", torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
    assert (layer.rows, layer.columns, layer.weights, layer.nonzero) == (2, 3, 6, 2)
    # dense: 6 values; bitmask: 1 byte of bits + 2 values; CSR: 2 values + 2 x 2 B column
    # indices + 3 x 2 B row pointers.
    assert encoding_sizes([layer], 8) == {"dense_bytes": 6, "bitmask_bytes": 3, "csr_bytes": 12}
    assert encoding_sizes([layer], 32) == {"dense_bytes": 24, "bitmask_bytes": 9, "csr_bytes": 18}


def test_magnitude_info_reports_encodings(magnitude):
    result = magnitude.prune(tiny_conv(seed=6), step_context(4), amount=0.9)
    info = result.info
    nonzero = 16640 - math.floor(0.9 * 16640 + 0.5)
    assert info["nonzero_weights"] == nonzero
    int8 = info["encodings"]["8"]
    assert int8["dense_bytes"] == 16640
    assert int8["bitmask_bytes"] == 16640 // 8 + nonzero
    assert info["encodings"]["32"]["dense_bytes"] == 4 * 16640
    assert int8["bitmask_bytes"] < int8["csr_bytes"] < int8["dense_bytes"]
    assert "latency" in info["speed"]


# -- report section -----------------------------------------------------------------------------


def variant_row(method: str, amount: float, epochs: int, info: dict, accuracy: float, **extra):
    """A finished row of a prune -> finetune recipe, as the compression stage records it."""
    return {
        "id": f"{method}-{amount}-ft{epochs}",
        "recipe": method,
        "key": f"{method}{amount}{epochs}",
        "status": "ok",
        "error": None,
        "steps": [
            {"kind": "prune", "method": method, "settings": {"amount": amount}, "info": info},
            {"kind": "finetune", "method": "finetune", "settings": {"epochs": epochs}, "info": {}},
        ],
        "accuracy": {"training": accuracy, "validation": accuracy, "testing": accuracy},
        "weight_bits": 32,
        "cached": False,
        **extra,
    }


FLOAT_ROW = {
    "id": "float",
    "recipe": "float",
    "status": "ok",
    "steps": [],
    "accuracy": {"training": 0.95, "validation": 0.92, "testing": 0.91},
    "parameters": 16652,
    "nonzero_parameters": 16652,
    "macs": 336000,
    "host_latency_ms": 0.2,
}


@pytest.fixture(scope="module")
def sweep_rows() -> list[dict]:
    """Rows of a magnitude and a channel sweep at 0.3 and 0.5, with and without fine-tuning."""
    from kwscompress_torch_pruning import ChannelPruner, MagnitudePruner

    rows = []
    for amount in (0.3, 0.5):
        for epochs, accuracy in ((0, 0.6 + amount / 10), (3, 0.8 + amount / 10)):
            info = MagnitudePruner().prune(tiny_conv(), step_context(4), amount=amount).info
            rows.append(
                variant_row(
                    "magnitude",
                    amount,
                    epochs,
                    info,
                    accuracy,
                    parameters=16652,
                    nonzero_parameters=info["nonzero_weights"] + 12,
                    macs=336000,
                    host_latency_ms=0.2,
                )
            )
            info = ChannelPruner().prune(tiny_conv(), step_context(4), amount=amount).info
            kept = info["kept_channels"][0]
            rows.append(
                variant_row(
                    "channel",
                    amount,
                    epochs,
                    info,
                    accuracy - 0.05,
                    parameters=info["parameters"],
                    nonzero_parameters=info["parameters"],
                    macs=42000 * kept,
                    host_latency_ms=0.02 * kept + epochs / 1000,
                )
            )
    return rows


def render(tmp_path, variants):
    from kwscompress_torch_pruning.section import PruningSection

    run = Run(tmp_path / "run")
    run.results["variants"] = copy.deepcopy(variants)
    return run, PruningSection().render(run)


def table_line(markdown: str, first_cell: str, after: str = "") -> str:
    text = markdown[markdown.index(after) :] if after else markdown
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_section_is_empty_without_pruning_rows(tmp_path):
    quantized = {**FLOAT_ROW, "id": "ptq-8b", "recipe": "ptq"}
    quantized["steps"] = [{"kind": "quantize", "method": "ptq", "settings": {"bits": 8}}]
    pruned_then_quantized = variant_row("channel", 0.5, 3, {"structured": True}, 0.8)
    pruned_then_quantized["steps"].append({"kind": "quantize", "method": "qat", "settings": {}})
    assert render(tmp_path, [])[1] is None
    assert render(tmp_path, [FLOAT_ROW, quantized, pruned_then_quantized])[1] is None


def test_section_tables_take_every_column_from_the_pruned_model(tmp_path, sweep_rows):
    run, content = render(tmp_path, [FLOAT_ROW, *sweep_rows])
    markdown = content.markdown
    # Channel sweep, amount 0.5: 4 channels, 2,000 FC inputs, 2081 * 4 + 4 parameters,
    # 42,000 * 4 MACs, the latency of the un-fine-tuned row, accuracy without and with FT.
    line = table_line(markdown, "0.5", after="### channel")
    assert line == (
        "| 0.5 | 4 | 2,000 | 8,328 | 168,000 | 0.080 ms | not measured | 60.0 % | 80.0 % |"
    )
    assert table_line(markdown, "0.3", after="### channel").startswith(
        "| 0.3 | 6 | 3,000 | 12,490 | 252,000 | 0.120 ms |"
    )
    assert table_line(markdown, "0 (float model)").startswith(
        f"| 0 (float model) | {MISSING} | {MISSING} | 16,652 |"
    )
    assert "MCU latency: not measured" in markdown
    # Magnitude sweep, amount 0.5: half of the 16,640 weights stay, encodings at int8 / float32.
    line = table_line(markdown, "0.5", after="### magnitude")
    assert line.startswith("| 0.5 | 8,320 (of 16,640) | 16,640 B (16.2 KiB) (float32: 66,560 B")
    assert line.endswith("| 65.0 % | 85.0 % |")
    assert "dense kernels" in markdown
    plots = sorted(p.name for p in (run.path / "plots").iterdir())
    assert len(plots) == 3 and all(p.startswith("pruning-") for p in plots)


def test_section_shows_mcu_latency_and_failures(tmp_path, sweep_rows):
    rows = copy.deepcopy(sweep_rows)
    for row in rows:
        if row["recipe"] == "channel":
            kept = prune_step_info(row)["kept_channels"][0]
            row["mcu"] = {"ms_at_clock": 10.0 * kept}
    rows[0]["deploy"] = {"board_latency_ms": 99.0}
    failed = variant_row("channel", 0.7, 0, {}, 0.0)
    failed.update(
        status="failed", accuracy={}, error={"plugin": "torch_pruning", "message": "boom"}
    )
    run, content = render(tmp_path, [FLOAT_ROW, *rows, failed])
    line = table_line(content.markdown, "0.5", after="### channel")
    assert "| 40.00 ms (emulated at the board clock) |" in line
    assert "MCU latency: not measured" not in content.markdown
    assert "1 pruning variant failed: channel-0.7-ft0 (torch_pruning): boom" in content.markdown
    assert len(list((run.path / "plots").iterdir())) == 3


def prune_step_info(row: dict) -> dict:
    return row["steps"][0]["info"]


def test_section_renders_in_the_report(tmp_path, pm, sweep_rows):
    from kwscompress.report import write_report

    run = Run(tmp_path / "run")
    run.record("variants", [FLOAT_ROW, *sweep_rows])
    paths = write_report(run, pm)
    assert not [e for e in run.results["report"]["errors"] if e["section"] == "pruning"]
    assert "pruning" in run.results["report"]["sections"]
    markdown = paths["markdown"].read_text("utf-8")
    assert "Pruning" in markdown and "pruning-channel-params-macs.png" in markdown
