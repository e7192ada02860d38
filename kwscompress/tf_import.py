"""Import TensorFlow safely beside torch.

With TensorFlow imported first, torch segfaults the moment it first imports triton (creating an
optimizer does, through ``torch._dynamo``). Importing ``torch._dynamo`` before TensorFlow avoids
it, so every module that needs TensorFlow gets it from :func:`import_tensorflow`, never directly.
TensorFlow is heavy (seconds to import), so only the stages that need it call this.
"""

from __future__ import annotations

import os
from types import ModuleType


def import_tensorflow() -> ModuleType:
    """Return the ``tensorflow`` module, imported after ``torch._dynamo`` and with quiet logs."""
    import torch._dynamo  # noqa: F401  (must precede tensorflow; see the module docstring)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf
