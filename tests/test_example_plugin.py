"""examples/prune_plugin: a third-party pruner, installed on its own, found like a built-in one.

The package is installed into a temporary folder (``pip install --target``) and every check runs
in a subprocess with that folder on ``PYTHONPATH``: exactly how kwscompress sees a package the
user installed, and nothing of it leaks into this test process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "prune_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example plugin installed into a fresh folder; returns that folder."""
    root = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = shutil.copytree(EXAMPLE, root / "src")
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


def run_with_plugin(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` with the installed example on the path; fail with its stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def run_script(site: Path, script: str) -> Any:
    """Run a Python script with the plugin installed; it prints one JSON object last."""
    output = run_with_plugin(site, "-c", textwrap.dedent(script)).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_cli_lists_the_example_with_its_own_version(site):
    rows = json.loads(run_with_plugin(site, "-m", "kwscompress.cli", "plugins", "--json").stdout)
    taylor = [row for row in rows if row["kind"] == "pruner" and row["name"] == "taylor"]
    assert len(taylor) == 1
    assert taylor[0]["plugin"] == "taylor_pruner"
    assert taylor[0]["version"] == "0.2.0"
    assert "Taylor" in taylor[0]["description"]
    # The built-in pruners are still there, from the kwscompress distribution.
    builtin = {row["name"]: row for row in rows if row["kind"] == "pruner"}
    assert builtin["channel"]["plugin"] == "torch_pruning"


CONTEXT = """
    import json
    import numpy as np
    import torch
    from kwscompress.compress.context import StepContext
    from kwscompress.config import TrainConfig
    from kwscompress.models.tiny_conv import TinyConv
    from kwscompress.plugins import get_plugin_manager
    from kwscompress.train import LabeledFeatures

    rng = np.random.default_rng(0)
    def split(n):
        return LabeledFeatures(
            rng.standard_normal((n, 49, 40)).astype(np.float32), rng.integers(0, 4, n)
        )
    context = StepContext(
        train=split(32), validation=split(8), labels=["_silence_", "_unknown_", "yes", "no"],
        train_config=TrainConfig(epochs=1, batch_size=8), finetune_learning_rate=1e-3, seed=0,
    )
    torch.manual_seed(0)
    model = TinyConv((49, 40), 4).eval()
    taylor = get_plugin_manager().component("pruner", "taylor")
"""


def test_example_prunes_tiny_conv_by_name(site):
    found = run_script(
        site,
        CONTEXT
        + """
    # Channel 5 feeds nothing: its fc columns are zero, so its Taylor score is zero.
    with torch.no_grad():
        model.fc.weight[:, 2500:3000] = 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = taylor.prune(model, context, **taylor.settings({"amount": 0.5, "batches": 2}))
    pruned = result.model
    features = torch.randn(3, 49, 40)
    print(json.dumps({
        "type": type(pruned).__name__,
        "channels": pruned.conv.out_channels,
        "fc_in": pruned.fc.in_features,
        "parameters": sum(p.numel() for p in pruned.parameters()),
        "output": list(pruned(features).shape),
        "info": result.info,
        "unchanged": all(torch.equal(model.state_dict()[k], v) for k, v in before.items()),
        "no_grads": all(p.grad is None for p in pruned.parameters()),
    }))
    """,
    )
    assert found["type"] == "TinyConv"
    assert (found["channels"], found["fc_in"]) == (4, 2000)
    assert found["parameters"] == 2081 * 4 + 4 == found["info"]["parameters"]
    assert found["output"] == [3, 4]
    assert found["unchanged"] and found["no_grads"]
    info = found["info"]
    assert info["structured"] is True and info["kept_channels"] == [4]
    layer = info["layers"][0]
    assert layer["importance"][5] == 0 and min(layer["importance"]) == 0
    assert 5 not in layer["kept_indices"]
    # The kept channels are the four with the highest scores.
    ranked = sorted(range(8), key=lambda c: layer["importance"][c], reverse=True)
    assert sorted(ranked[:4]) == layer["kept_indices"]


def test_example_settings_errors_name_the_key(site):
    found = run_script(
        site,
        CONTEXT
        + """
    messages = []
    for values in ({"amount": 0.5, "epochs": 3}, {"amount": 2}, {"amount": 0.5, "batches": 0}):
        try:
            taylor.settings(values)
        except Exception as error:
            messages.append([type(error).__name__, str(error)])
    print(json.dumps(messages))
    """,
    )
    assert [name for name, _ in found] == ["ConfigError"] * 3
    assert "'epochs'" in found[0][1] and "'amount'" in found[1][1] and "'batches'" in found[2][1]


def test_example_runs_in_a_sweep_by_name(site, make_dataset, tmp_path):
    values = {
        "data": {"source": "speech_commands", "root": str(make_dataset()), "augment_copies": 1},
        "features": {"name": "spectrogram"},
        "model": {"name": "tiny_conv"},
        "train": {"epochs": 2, "batch_size": 8},
        "compress": {
            "recipes": [
                {
                    "name": "taylor",
                    "steps": [
                        {"kind": "prune", "method": "taylor", "amount": 0.5},
                        {"kind": "finetune", "epochs": [0, 1]},
                    ],
                }
            ]
        },
        "export": {"enabled": False},
        "deploy": {"enabled": False},
        "run": {"cache_dir": str(tmp_path / "cache")},
    }
    rows = run_script(
        site,
        f"""
        import json
        from kwscompress import Pipeline
        from kwscompress.config import Config
        pipeline = Pipeline(Config.from_dict({values!r}), run_dir={str(tmp_path / "run")!r})
        print(json.dumps(pipeline.compress()))
        """,
    )
    by_id = {row["id"]: row for row in rows}
    assert list(by_id) == ["float", "taylor-0.5-ft0", "taylor-0.5-ft1"]
    for variant in ("taylor-0.5-ft0", "taylor-0.5-ft1"):
        row = by_id[variant]
        assert row["status"] == "ok", row["error"]
        assert row["steps"][0]["method"] == "taylor"
        # Half of tiny_conv's 8 channels physically removed: 2081 * 4 + 4 parameters.
        assert row["parameters"] == 2081 * 4 + 4
    assert by_id["taylor-0.5-ft1"]["steps"][1]["info"]["epochs"] == 1
