"""Built-in pruning plugin: ``magnitude`` and ``channel`` pruners, and the "Pruning" section.

``magnitude`` (:class:`~kwscompress_torch_pruning.magnitude.MagnitudePruner`) zeroes weights
through ``torch.nn.utils.prune`` masks; ``channel``
(:class:`~kwscompress_torch_pruning.channel.ChannelPruner`) removes whole channels through
torch-pruning's dependency graph. The report section
(:class:`~kwscompress_torch_pruning.section.PruningSection`) reads the variant rows of prune
recipes. A masked model becomes a plain one with
:func:`~kwscompress_torch_pruning.common.make_pruning_permanent`.
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress.protocols import Pruner, ReportSection
from kwscompress_torch_pruning.channel import ChannelPruner
from kwscompress_torch_pruning.common import make_pruning_permanent
from kwscompress_torch_pruning.magnitude import MagnitudePruner
from kwscompress_torch_pruning.section import PruningSection

__all__ = ["ChannelPruner", "MagnitudePruner", "PruningSection", "make_pruning_permanent"]


@hookimpl
def kws_register_pruners() -> list[Pruner]:
    """The ``magnitude`` and ``channel`` pruners."""
    return [MagnitudePruner(), ChannelPruner()]


@hookimpl
def kws_register_report_sections() -> list[ReportSection]:
    """The "Pruning" section (order 84)."""
    return [PruningSection()]
