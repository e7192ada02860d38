"""Progress bars for long steps (synthesis, feature extraction, epochs, sweep, export, MCU).

One place decides how progress looks, so every stage shows it the same way. Bars go to standard
error and disappear when ``KWSCOMPRESS_NO_PROGRESS`` is set (the tests set it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[..., None]
"""Called with the number of items just finished, and optionally ``status=`` text shown after
the bar (e.g. ``"3 failed"``)."""


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Advance]:
    """Show a bar for ``total`` items; yields a function to advance it."""
    if os.environ.get("KWSCOMPRESS_NO_PROGRESS"):
        yield lambda n=1, status=None: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str | None = None) -> None:
            if status is None:
                progress.advance(task, n)
            else:
                progress.update(task, advance=n, status=status)

        yield advance
