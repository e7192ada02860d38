"""The run directory: ``results.json``, artifacts, plots and logs, all written atomically.

Layout of a run directory::

    results.json       every stage's summary (schema in docs/results.rst)
    checkpoints/       model weights (``<model>.pt``)
    plots/             PNG figures
    logs/run.log       the log of the run

Every file is written to a temporary name in the same folder and renamed into place, so a run
that is interrupted never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

RESULTS_SCHEMA = 1
"""Version of the ``results.json`` layout; bumped when a field changes meaning or moves."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=_json_default)
        handle.write("\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in stage summaries; JSON has no type for either.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Run:
    """A run directory and its ``results.json``.

    ``results`` is a dict of stage summaries; :meth:`record` sets one and saves the file at once,
    so whatever finished is on disk even if a later stage fails.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.results_path = self.path / "results.json"
        if self.results_path.exists():
            self.results: dict[str, Any] = json.loads(self.results_path.read_text("utf-8"))
        else:
            self.results = {"schema": RESULTS_SCHEMA}
        self.log = _run_logger(self.path / "logs" / "run.log")

    def subdir(self, name: str) -> Path:
        """Return (creating it) a folder inside the run: ``checkpoints``, ``plots``, ..."""
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def record(self, key: str, value: Any) -> None:
        """Set ``results[key]`` and save ``results.json``."""
        self.results[key] = value
        self.save()

    def save(self) -> None:
        """Write ``results.json`` atomically."""
        write_json(self.results_path, self.results)


def _run_logger(path: Path) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"kwscompress.run.{path.parent.parent.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger
