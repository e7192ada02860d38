"""Built-in plugin: the ``ray`` sweep executor (needs the ``ray`` extra).

Registers :class:`~kwscompress_ray.executor.RayExecutor`. Ray itself is imported only when a
sweep runs on it, so ``kwscompress plugins`` lists the executor without Ray installed, and
choosing it without Ray gives one message naming the extra.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import Executor
from kwscompress_ray.executor import RayExecutor


@hookimpl
def kws_register_executors() -> list[Executor]:
    """The ``ray`` executor."""
    return [RayExecutor()]
