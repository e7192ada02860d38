"""The built-in model registry: tc_ds_cnn, tiny_conv and ds_cnn."""

from __future__ import annotations

import pytest
import torch

from kwscompress.config import ModelConfig
from kwscompress.errors import KwsError, UnknownComponentError
from kwscompress.models import DsCnnSpec, TcDsCnnSpec, TinyConvSpec
from kwscompress.plugins import PluginManager
from kwscompress.protocols import ModelSpec


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in (TinyConvSpec(), DsCnnSpec(), TcDsCnnSpec())}


def test_registry_serves_the_models_from_the_models_entry_point(pm: PluginManager) -> None:
    assert isinstance(pm.component("model", "tiny_conv"), TinyConvSpec)
    assert isinstance(pm.component("model", "ds_cnn"), DsCnnSpec)
    assert isinstance(pm.component("model", ModelConfig().name), TcDsCnnSpec)
    registered = pm.components("model")
    for name in ("tiny_conv", "ds_cnn", "tc_ds_cnn"):
        assert registered[name].plugin == "models"
        assert isinstance(registered[name].component, ModelSpec)
        assert registered[name].component.description


def test_unknown_model_name_lists_the_valid_ones(pm: PluginManager) -> None:
    with pytest.raises(UnknownComponentError, match="tiny_conv") as info:
        pm.component("model", "tiny_cnov")
    assert "ds_cnn" in str(info.value)


def test_tiny_conv_has_the_tflm_parameter_counts(specs: dict[str, ModelSpec]) -> None:
    model = specs["tiny_conv"].build((49, 40), 4)
    assert _params(model) == 16_652
    assert _params(model.conv) == 648
    assert _params(model.fc) == 16_004
    assert model.conv.kernel_size == (10, 8) and model.conv.stride == (2, 2)
    assert model.conv.padding == (5, 3)
    assert model.fc.in_features == 4000


def test_tiny_conv_flattens_channel_height_width(specs: dict[str, ModelSpec]) -> None:
    # Channel c must own fc columns [500c, 500c + 500): pruning and export rely on it.
    model = specs["tiny_conv"].build((49, 40), 4).eval()
    seen = {}
    model.fc.register_forward_hook(lambda _m, inputs, _o: seen.update(fc_in=inputs[0]))
    features = torch.randn(2, 49, 40)
    model(features)
    conv_out = torch.relu(model.conv(features.unsqueeze(1)))
    assert conv_out.shape == (2, 8, 25, 20)
    for channel in range(8):
        block = seen["fc_in"][:, 500 * channel : 500 * (channel + 1)]
        assert torch.equal(block, conv_out[:, channel].reshape(2, 500))


def test_tiny_conv_adapts_to_other_shapes(specs: dict[str, ModelSpec]) -> None:
    model = specs["tiny_conv"].build((98, 13), 12)
    # Height (98 + 10 - 10) // 2 + 1 = 50, width (13 + 6 - 8) // 2 + 1 = 6.
    assert model.fc.in_features == 8 * 50 * 6
    assert model.eval()(torch.randn(3, 98, 13)).shape == (3, 12)


def test_models_return_logits_of_the_right_shape(specs: dict[str, ModelSpec]) -> None:
    torch.manual_seed(0)
    for spec in specs.values():
        model = spec.build((49, 40), 4).eval()
        logits = model(torch.randn(5, 49, 40))
        assert logits.shape == (5, 4)
        # Logits, not probabilities: rows do not sum to one and can be negative.
        assert not torch.allclose(logits.sum(dim=1), torch.ones(5), atol=1e-3)
        flat = model(torch.randn(2, 49 * 40))
        assert flat.shape == (2, 4)


def test_ds_cnn_is_hello_edge_small(specs: dict[str, ModelSpec]) -> None:
    model = specs["ds_cnn"].build((49, 40), 4)
    filters, classes = 64, 4
    stem = 10 * 4 * filters + 2 * filters
    block = 9 * filters + 2 * filters + filters * filters + 2 * filters
    assert _params(model) == stem + 4 * block + filters * classes + classes == 22_660
    assert len(model.blocks) == 4
    depthwise = model.blocks[0][0][0]
    assert depthwise.groups == filters and depthwise.kernel_size == (3, 3)
    assert _params(specs["ds_cnn"].build((49, 40), 12)) == 22_660 + 8 * 65


def test_tc_ds_cnn_convolves_over_time_after_a_full_band_stem(
    specs: dict[str, ModelSpec],
) -> None:
    model = specs["tc_ds_cnn"].build((49, 40), 4).eval()
    filters = 64
    stem = 3 * 40 * filters + 2 * filters
    block = 9 * filters + 2 * filters + filters * filters + 2 * filters
    assert _params(model) == stem + 4 * block + filters * 4 + 4 == 27_780
    assert model.stem[0].kernel_size == (3, 40) and model.stem[0].padding == (1, 0)
    frames = []
    x = model.stem(torch.randn(1, 1, 49, 40))
    for block_ in model.blocks:
        depthwise = block_[0][0]
        assert depthwise.kernel_size == (9, 1) and depthwise.stride == (2, 1)
        x = block_(x)
        frames.append(tuple(x.shape[2:]))
    # Frequency is gone after the stem; each block halves the frames (rounding up).
    assert frames == [(25, 1), (13, 1), (7, 1), (4, 1)]
    # Another feature width gets a stem as wide as it.
    assert specs["tc_ds_cnn"].build((49, 13), 4).stem[0].kernel_size == (3, 13)
    # Other widths, for width studies: the same counts with 128 filters.
    filters = 128
    stem = 3 * 40 * filters + 2 * filters
    block = 9 * filters + 2 * filters + filters * filters + 2 * filters
    wide = specs["tc_ds_cnn"].build((49, 40), 4, filters=filters)
    assert _params(wide) == stem + 4 * block + filters * 4 + 4 == 88_324
    assert _params(specs["ds_cnn"].build((49, 40), 4, filters=32)) < 22_660


@pytest.mark.parametrize(
    ("name", "shape", "classes", "message"),
    [
        ("tiny_conv", (49, 1), 4, "does not fit"),
        ("tiny_conv", (49, 40), 1, "at least 2 classes"),
        ("ds_cnn", (0, 40), 4, "'ds_cnn'.*at least 1"),
        ("tc_ds_cnn", (49, 40), 1, "'tc_ds_cnn' needs at least 2 classes"),
    ],
)
def test_bad_build_requests_raise_kws_error(
    specs: dict[str, ModelSpec], name: str, shape: tuple[int, int], classes: int, message: str
) -> None:
    with pytest.raises(KwsError, match=message):
        specs[name].build(shape, classes)
