"""Built-in estimator plugin: static cost analysis with fvcore and forward hooks.

Registers the ``fvcore`` estimator (:class:`kwscompress_fvcore.estimator.FvcoreEstimator`).
fvcore itself is imported only when an estimate runs.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress_fvcore.estimator import FvcoreEstimator


@hookimpl
def kws_register_estimators() -> list[FvcoreEstimator]:
    """The ``fvcore`` estimator."""
    return [FvcoreEstimator()]
