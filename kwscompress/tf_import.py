"""Import TensorFlow safely beside torch, and quietly.

With TensorFlow imported first, torch segfaults the moment it first imports triton (creating an
optimizer does, through ``torch._dynamo``). Importing ``torch._dynamo`` before TensorFlow avoids
it, so every module that needs TensorFlow gets it from :func:`import_tensorflow`, never directly.
TensorFlow is heavy (seconds to import), so only the stages that need it call this.

TensorFlow's native libraries print start-up notices to file descriptor 2 before its logging is
set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them (the "oneDNN custom operations are on"
line comes once per shared library). The import therefore runs with descriptor 2 sent to a
temporary file; afterwards every line that is not one of the known notices is passed on.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

IMPORT_NOTICES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)
"""Start-up lines that carry nothing for the user (the oneDNN one tells how to change
numerics, which the features do not depend on: the micro frontend is integer code)."""


def import_tensorflow() -> ModuleType:
    """Return the ``tensorflow`` module, imported after ``torch._dynamo`` and with quiet logs."""
    import torch._dynamo  # noqa: F401  (must precede tensorflow; see the module docstring)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_filtered(IMPORT_NOTICES):
        import tensorflow as tf
    # TensorFlow's Python warnings are about its own graph machinery (the micro frontend is
    # retraced for every new clip length, by design); errors still get through.
    tf.get_logger().setLevel(logging.ERROR)
    return tf


@contextmanager
def native_stderr_filtered(notices: tuple[str, ...]) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file; replay the lines that contain no ``notices``.

    For native libraries that print to the descriptor directly (logging settings cannot reach
    them); Python's own ``sys.stderr`` is flushed on both sides, so the order is kept.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(notice in line for notice in notices):
                    sys.stderr.write(line)
            sys.stderr.flush()
