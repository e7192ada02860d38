"""Host profiling of the float model: latency percentiles and per-operator self time."""

from __future__ import annotations

import pytest
import torch

from kwscompress.errors import KwsError
from kwscompress.plugins import PluginManager
from kwscompress.profile import profile_model


def test_profile_tiny_conv(pm: PluginManager) -> None:
    model = pm.component("model", "tiny_conv").build((49, 40), num_classes=4)
    threads_before = torch.get_num_threads()
    result = profile_model(model, (1, 49, 40), runs=5, warmup=1, threads=1)
    assert torch.get_num_threads() == threads_before
    assert (result["device"], result["batch"], result["runs"], result["warmup"]) == (
        "cpu",
        1,
        5,
        1,
    )
    assert result["threads"] == 1
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    names = {op["name"] for op in result["operators"]}
    assert {"aten::conv2d", "aten::linear"} <= names
    conv = next(op for op in result["operators"] if op["name"] == "aten::conv2d")
    assert conv["calls"] == 1 and conv["self_cpu_ms"] >= 0
    assert model.training  # a fresh model is in training mode and stays so
    if torch.cuda.is_available():
        assert result["cuda"]["median_ms"] > 0 and result["note"] == ""
    else:
        assert result["cuda"] is None and result["note"] == "no GPU"


def test_profile_rejects_bad_counts() -> None:
    with pytest.raises(KwsError, match="runs >= 1"):
        profile_model(torch.nn.Linear(2, 2), (1, 2), runs=0)
