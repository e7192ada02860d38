"""Issue 9, polish: stderr carries only what the user needs (no TensorFlow start-up notices, no
profiler USDT lines), while real messages still get through."""

from __future__ import annotations

import os
import subprocess
import sys

from kwscompress.tf_import import IMPORT_NOTICES, native_stderr_filtered

QUIET_SCRIPT = """
from kwscompress.tf_import import import_tensorflow
tf = import_tensorflow()
from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op
import torch
from kwscompress.profile import profile_model
profile_model(torch.nn.Linear(4, 2), (1, 4), runs=2, warmup=1)
print("done", tf.__version__)
"""


def test_tensorflow_import_and_profiling_leave_stderr_empty() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KINETO_"))}
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done ")
    assert result.stderr == ""


def test_filtered_stderr_passes_other_lines_on(capfd) -> None:
    with native_stderr_filtered(IMPORT_NOTICES):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see...\n")
        os.write(2, b"a real warning\n")
    assert capfd.readouterr().err == "a real warning\n"
