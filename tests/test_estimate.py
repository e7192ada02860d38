"""The estimate stage: counts, FLOP conventions, memory, board fit, throughput and the command."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from kwscompress.errors import KwsError, UnknownComponentError
from kwscompress.estimate import (
    FLOP_CONVENTIONS,
    configure_estimate_parser,
    estimate_command,
    estimate_model,
    format_estimate,
    percent,
    throughput_line,
    weight_bytes,
)
from kwscompress.models.tiny_conv import TinyConv
from kwscompress.plugins import PluginManager
from kwscompress.protocols import Estimator
from kwscompress_fvcore.estimator import FvcoreEstimator

TINY_SHAPE = (1, 49, 40)


@pytest.fixture
def tiny_conv(pm: PluginManager) -> nn.Module:
    return pm.component("model", "tiny_conv").build((49, 40), num_classes=4)


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    from kwscompress.plugins import get_plugin_manager

    model = get_plugin_manager().component("model", "tiny_conv").build((49, 40), num_classes=4)
    return estimate_model(model, TINY_SHAPE, model_name="tiny_conv")


def _layer(result: dict, name: str) -> dict:
    (layer,) = [row for row in result["layers"] if row["name"] == name]
    return layer


def test_fvcore_estimator_is_registered_and_satisfies_the_protocol(pm: PluginManager) -> None:
    estimator = pm.component("estimator", "fvcore")
    assert isinstance(estimator, FvcoreEstimator)
    assert isinstance(estimator, Estimator)


def test_tiny_conv_parameters_macs_and_flops(tiny_result: dict) -> None:
    assert tiny_result["label"] == "estimate"
    assert tiny_result["estimator"] == "fvcore"
    assert tiny_result["input_shape"] == [1, 49, 40]
    assert tiny_result["total"]["parameters"] == 16_652
    assert tiny_result["total"]["macs"] == 336_000
    assert tiny_result["total"]["flops"] == 676_004
    assert "2 x MACs" in tiny_result["flop_convention"]
    conv, fc = _layer(tiny_result, "conv"), _layer(tiny_result, "fc")
    assert (conv["parameters"], conv["macs"], conv["flops"]) == (648, 320_000, 644_000)
    assert (fc["parameters"], fc["macs"], fc["flops"]) == (16_004, 16_000, 32_004)
    assert conv["output_shape"] == [1, 8, 25, 20] and conv["output_elements"] == 4000
    assert [row["name"] for row in tiny_result["layers"]] == ["conv", "relu", "dropout", "fc"]


def test_tiny_conv_memory(tiny_result: dict) -> None:
    memory = tiny_result["memory"]
    assert memory["simple_forward_bytes"] == 7_856
    assert memory["simple_forward_definition"] == "(input + output elements) x 4 bytes"
    assert memory["simple_forward_ram_percent"] == 3.0
    # The convolution runs with its 1,960-element input and 4,000-element output live; ReLU and
    # dropout work in place, so the peak is not ReLU's 2 x 4,000.
    assert memory["peak_at_layer"] == "conv"
    assert memory["peak_activation_bytes"] == {"fp32": 5_960 * 4, "int8": 5_960}
    assert _layer(tiny_result, "relu")["live_elements"] == 4_000
    assert _layer(tiny_result, "fc")["live_elements"] == 4_004


def test_tiny_conv_fits_the_nano_with_correct_percentages(tiny_result: dict) -> None:
    assert tiny_result["board"]["name"] == "nano33ble"
    fp32, int8 = tiny_result["fit"]
    assert (fp32["bits"], fp32["weight_bytes"], fp32["flash_percent"]) == (32, 66_608, 6.78)
    assert (fp32["ram_bytes"], fp32["ram_percent"]) == (23_840, 9.09)
    # 16,640 int8 weights + 12 int32 biases.
    assert (int8["bits"], int8["flash_bytes"], int8["ram_bytes"]) == (8, 16_688, 5_960)
    assert fp32["fits"] and int8["fits"] and fp32["verdict"] == "fits"


@pytest.mark.parametrize(
    ("convention", "total"),
    [("2mac+bias", 676_004), ("2mac+channel_bias", 672_012), ("2mac", 672_000), ("mac", 336_000)],
)
def test_flop_conventions_on_tiny_conv(tiny_conv: nn.Module, convention: str, total: int) -> None:
    result = estimate_model(tiny_conv, TINY_SHAPE, flop_convention=convention)
    assert result["total"]["flops"] == total
    assert result["flop_convention"] == FLOP_CONVENTIONS[convention][0]
    assert result["total"]["flops"] == sum(row["flops"] for row in result["layers"])


@pytest.mark.parametrize(("channels", "flops"), [(7, 588_011), (4, 336_008), (1, 84_005)])
def test_channel_pruned_tiny_conv(channels: int, flops: int) -> None:
    # The reference's structured-pruning table used the per-channel bias convention.
    model = TinyConv((49, 40), num_classes=4, channels=channels)
    result = estimate_model(model, TINY_SHAPE, flop_convention="2mac+channel_bias")
    assert result["total"]["parameters"] == 2081 * channels + 4
    assert result["total"]["macs"] == 42_000 * channels
    assert result["total"]["flops"] == flops


@pytest.mark.parametrize(
    ("layer", "shape", "convention", "flops"),
    [
        # The course's test cases: Linear(2, 3) on batch 10, Conv2d(2, 5, 3, p=1) on 10x2x4x4.
        (nn.Linear(2, 3, bias=False), (10, 2), "2mac+bias", 120),
        (nn.Linear(2, 3), (10, 2), "2mac+bias", 150),
        (nn.Conv2d(2, 5, 3, padding=1, bias=False), (10, 2, 4, 4), "2mac+bias", 28_800),
        (nn.Conv2d(2, 5, 3, padding=1), (10, 2, 4, 4), "2mac+bias", 29_600),
        # The bias-per-channel convention of the reference report gives 28,850 here.
        (nn.Conv2d(2, 5, 3, padding=1), (10, 2, 4, 4), "2mac+channel_bias", 28_850),
    ],
)
def test_course_flop_cases(layer: nn.Module, shape: tuple, convention: str, flops: int) -> None:
    assert estimate_model(layer, shape, flop_convention=convention)["total"]["flops"] == flops


@pytest.mark.parametrize(
    ("layer", "shape", "simple_bytes"),
    [(nn.Linear(3, 5), (2, 3), 64), (nn.Conv2d(3, 5, 3, padding=1), (2, 3, 128, 128), 1_048_576)],
)
def test_course_forward_memory_cases(layer: nn.Module, shape: tuple, simple_bytes: int) -> None:
    result = estimate_model(layer, shape)
    assert result["memory"]["simple_forward_bytes"] == simple_bytes


class _InputNeededLater(nn.Module):
    """The input is read again after two other layers: it must stay live meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.late = (
            nn.Linear(10, 100),
            nn.Linear(100, 50),
            nn.Linear(10, 7),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.second(self.first(x))
        return self.late(x), hidden


def test_peak_memory_keeps_tensors_needed_later() -> None:
    result = estimate_model(_InputNeededLater(), (1, 10))
    live = {row["name"]: row["live_elements"] for row in result["layers"]}
    # second: input x (10, read by late) + first's output (100) + its own output (50).
    assert live == {"first": 110, "second": 160, "late": 10 + 50 + 7}
    assert result["memory"]["peak_at_layer"] == "second"
    assert result["memory"]["peak_activation_bytes"] == {"fp32": 640, "int8": 160}


class _SharedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.layer(x))


class _NoSubmodules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_a_module_called_twice_counts_both_calls() -> None:
    (row,) = estimate_model(_SharedLayer(), (1, 8))["layers"]
    assert (row["calls"], row["parameters"], row["macs"]) == (2, 72, 128)
    assert row["flops"] == 2 * 128 + 2 * 8  # two bias adds of 8 outputs
    assert row["live_elements"] == 16


def test_a_model_without_submodules_is_one_layer() -> None:
    result = estimate_model(_NoSubmodules(), (2, 3))
    (row,) = result["layers"]
    assert (row["name"], row["parameters"], row["macs"]) == ("_NoSubmodules", 12, 24)
    assert result["total"]["flops"] == 48
    assert result["memory"]["peak_activation_bytes"]["int8"] == 6 + 8


def test_in_place_relu_and_flatten_share_their_input_buffer() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(100, 2)
    )
    result = estimate_model(model, (1, 1, 5, 5))
    assert [row["live_elements"] for row in result["layers"]] == [125, 100, 100, 102]


def test_too_big_for_flash_at_32_bits_but_not_at_8() -> None:
    model = nn.Linear(600, 500)  # 300,500 parameters: 1,202,000 B in float32
    result = estimate_model(model, (1, 600), board="nano33ble", bits=(32, 8))
    fp32, int8 = result["fit"]
    assert not fp32["fits"]
    # Budgets use the flash a sketch can upload (983,040 B of the Nano's 1 MB).
    assert fp32["verdict"] == "does not fit: flash 1,202,000 B > 983,040 B"
    assert fp32["flash_percent"] == 122.27
    assert int8["fits"] and int8["flash_bytes"] == 300_000 + 500 * 4
    assert "does not fit" in format_estimate(result)


def test_tight_fit_is_flagged() -> None:
    model = nn.Conv2d(1, 64, 3, padding=1)  # (1,000 + 64,000) x 4 B = 260,000 B of 262,144 B
    (fit,) = estimate_model(model, (1, 1, 25, 40), bits=(32,))["fit"]
    assert fit["fits"] and fit["ram_percent"] == 99.18
    assert fit["verdict"].startswith("fits (tight: RAM 99.18 %;")


def test_too_big_for_ram() -> None:
    model = nn.Conv2d(1, 16, 3, padding=1)  # 16 x 100 x 100 outputs
    result = estimate_model(model, (1, 1, 100, 100), board="pico", bits=(32, 8))
    fp32, int8 = result["fit"]
    assert not fp32["fits"] and fp32["verdict"].startswith("does not fit: RAM 680,000 B")
    assert int8["fits"] and int8["ram_bytes"] == 170_000


def test_weight_bytes_round_each_tensor_and_keep_biases_at_32_bits(tiny_conv: nn.Module) -> None:
    assert weight_bytes(tiny_conv, 32) == 66_608
    assert weight_bytes(tiny_conv, 4) == 320 + 8_000 + 12 * 4
    assert weight_bytes(nn.Linear(3, 1, bias=False), 3) == 2  # 9 bits round up to 2 bytes


def test_percentages_divide_by_capacity() -> None:
    # The reference report multiplied by 1024 and printed 68.24 KB = 6.66 %.
    assert percent(66_608, 1_048_576) == 6.35
    assert percent(7_856, 262_144) == 3.0


def test_throughput_line() -> None:
    line = throughput_line(676_004, 3.125e12)
    assert line == "676,004 FLOPs per pass at 3.125 TFLOP/s -> 4,622,754 passes/s (compute bound)"
    # The report's own numbers give 4.65 million passes/s, not its 4,650.
    assert "4,650,132 passes/s" in throughput_line(672_024, 3.125e12)


def test_mode_is_restored(tiny_conv: nn.Module) -> None:
    tiny_conv.train()
    estimate_model(tiny_conv, TINY_SHAPE)
    assert tiny_conv.training


def test_bad_arguments_are_user_errors(tiny_conv: nn.Module) -> None:
    with pytest.raises(UnknownComponentError, match=r"valid names: .*nano33ble"):
        estimate_model(tiny_conv, TINY_SHAPE, board="arduino_uno")
    with pytest.raises(KwsError, match="FLOP convention 'flops'"):
        estimate_model(tiny_conv, TINY_SHAPE, flop_convention="flops")
    with pytest.raises(KwsError, match="between 1 and 32"):
        estimate_model(tiny_conv, TINY_SHAPE, bits=(0,))
    with pytest.raises(UnknownComponentError, match="unknown estimator 'ptflops'"):
        estimate_model(tiny_conv, TINY_SHAPE, estimator="ptflops")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_estimate_parser(parser)
    return parser.parse_args(list(argv))


def test_estimate_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert estimate_command(_parse("--model", "tiny_conv", "--board", "pico", "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny_conv" and result["board"]["name"] == "pico"
    assert result["total"]["macs"] == 336_000
    assert [row["bits"] for row in result["fit"]] == [32, 8]


def test_estimate_command_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert estimate_command(_parse("--model", "tiny_conv", "--bits", "4")) == 0
    text = capsys.readouterr().out
    assert "Estimate of tiny_conv (fvcore)" in text
    assert "676,004" in text and "7,856 B" in text
    assert "code, runtime and model format overhead are not included" in text
    assert "8,368" in text  # 4-bit weights


def test_estimate_command_unknown_model() -> None:
    with pytest.raises(UnknownComponentError, match="unknown model 'big_conv'"):
        estimate_command(_parse("--model", "big_conv"))
