"""kwscompress: train, estimate, compress and deploy keyword spotters for microcontrollers."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("kwscompress")
"""Decorator for plugin functions that implement a hook of :mod:`kwscompress.hookspecs`."""

from kwscompress.pipeline import Pipeline  # noqa: E402  (Pipeline's plugins import hookimpl)

__all__ = ["Pipeline", "__version__", "hookimpl"]
