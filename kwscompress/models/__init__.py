"""Built-in model architectures, registered through the ``models`` entry point.

Each component satisfies :class:`kwscompress.protocols.ModelSpec`: its ``build`` returns a fresh
``torch.nn.Module`` that takes ``[N, frames, bins]`` features and returns logits (softmax is
applied by :func:`kwscompress.train.predict`, never inside the model).
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.models.ds_cnn import DsCnn, DsCnnSpec, TcDsCnnSpec
from kwscompress.models.tiny_conv import TinyConv, TinyConvSpec
from kwscompress.protocols import ModelSpec

__all__ = [
    "DsCnn",
    "DsCnnSpec",
    "TcDsCnnSpec",
    "TinyConv",
    "TinyConvSpec",
    "kws_register_models",
]


@hookimpl
def kws_register_models() -> list[ModelSpec]:
    """Register ``tiny_conv``, ``ds_cnn`` and ``tc_ds_cnn``."""
    return [TinyConvSpec(), DsCnnSpec(), TcDsCnnSpec()]
