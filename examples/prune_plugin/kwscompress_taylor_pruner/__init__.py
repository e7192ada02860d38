"""kwscompress-taylor-pruner: registers the ``taylor`` channel pruner.

kwscompress loads this module through the ``kwscompress`` entry point group (see this package's
``pyproject.toml``) and calls every ``kws_*`` function marked with ``@hookimpl``.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress_taylor_pruner.pruner import TaylorPruner

__all__ = ["TaylorPruner"]


@hookimpl
def kws_register_pruners() -> list[TaylorPruner]:
    """The ``taylor`` pruner."""
    return [TaylorPruner()]
