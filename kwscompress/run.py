"""The run directory: ``results.json``, artifacts, plots and logs, all written atomically.

Layout of a run directory::

    results.json           every stage's summary (schema in docs/results.rst)
    results.previous.json  the results of the run before, when a run reused the folder
    checkpoints/           model weights (``<model>.pt``)
    plots/                 PNG figures
    logs/run.log           the log of the run

Every file is written to a temporary name in the same folder and renamed into place, so a run
that is interrupted never leaves a half-written file behind. Files and folders renamed into place
get the modes the umask gives new files (temporary files are private until then), so a shared
cache or a served report is as readable as anything else the user writes.

Cache folders (a synthesized dataset, a feature set) are filled with :func:`atomic_dir` under a
:func:`file_lock`, so concurrent runs on one cache wait for each other instead of colliding.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kwscompress.errors import KwsError

RESULTS_SCHEMA = 2
"""Version of the ``results.json`` layout; bumped when a field changes meaning or moves."""

PREVIOUS_RESULTS = "results.previous.json"
"""Where a rerun into the same folder keeps the results of the run before."""

_TEMP_PID = re.compile(r"^\..+\.tmp-(\d+)(-.*)?$")


def current_umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Give ``path`` the mode a plainly created file or folder would have under the umask.

    ``mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders; renamed into place they
    would keep those modes and shut every other user out of a shared cache or report.
    """
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    ensure_dir(path.parent, "folder")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


@contextmanager
def atomic_dir(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; on success it becomes ``folder``.

    For cache folders whose name is the key of their content: when another process put
    ``folder`` in place first, that folder is kept and this one discarded, since both hold the
    same thing. The temporary name carries the process id, so :func:`remove_stale_temps` can
    tell the leftovers of a killed process from a fill still under way.
    """
    folder = Path(folder)
    ensure_dir(folder.parent, "cache folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-", dir=folder.parent))
    try:
        yield tmp
        publish_mode(tmp)
        try:
            os.rename(tmp, folder)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def file_lock(path: Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of the block.

    Concurrent fills of one cache entry wait here; the one that comes second finds the entry
    made and uses it. The lock file stays (removing it would race with a waiting process).

    :param waiting: what the holder is doing, printed to standard error when this process has
        to wait (``kwscompress: waiting for another process <waiting>``).
    """
    path = Path(path)
    ensure_dir(path.parent, "cache folder")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(f"kwscompress: waiting for another process {waiting}", file=sys.stderr)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_temps(parent: Path) -> list[Path]:
    """Delete the temporary folders in ``parent`` left by processes that no longer exist.

    A process killed outright (SIGKILL, power loss) cannot clean up after itself; the next fill
    of the same cache does it. Folders of live processes are left alone. Returns what was removed.
    """
    removed = []
    if not Path(parent).is_dir():
        return removed
    for entry in Path(parent).iterdir():
        match = _TEMP_PID.match(entry.name)
        if match and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def ensure_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and its parents); a file in the way is a :class:`KwsError` naming it."""
    path = Path(path)
    check_folder_path(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KwsError(f"{what} {str(path)!r} cannot be created: {exc.strerror}") from None
    return path


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


def read_results(path: Path) -> dict[str, Any]:
    """Parse a ``results.json``; one that is not a JSON object is a :class:`KwsError`."""
    path = Path(path)
    try:
        results = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KwsError(
            f"{str(path)!r} is not valid JSON ({exc}); it is damaged: rerun the pipeline into "
            "this folder to start it afresh, or move the file away"
        ) from None
    except OSError as exc:
        raise KwsError(f"{str(path)!r} cannot be read: {exc.strerror}") from None
    if not isinstance(results, dict):
        raise KwsError(
            f"{str(path)!r} holds a JSON {type(results).__name__}, not an object; it is not a "
            "kwscompress results file: rerun the pipeline into this folder, or move it away"
        )
    return results


class Run:
    """A run directory and its ``results.json``.

    ``results`` is a dict of stage summaries; :meth:`record` sets one and saves the file at once,
    so whatever finished is on disk even if a later stage fails.

    :param fresh: start the results afresh (what :meth:`kwscompress.Pipeline.run` does): the
        previous run's ``results.json`` is kept as ``results.previous.json`` and its report and
        plots are removed, so nothing of it mixes into this run. Otherwise an existing
        ``results.json`` is loaded (a single stage or a report adds to the run that is there).
    :raises KwsError: the folder cannot be created, or its ``results.json`` is damaged.
    """

    def __init__(self, path: str | Path, fresh: bool = False):
        self.path = ensure_dir(Path(path), "run directory")
        self.results_path = self.path / "results.json"
        self.log_path = self.path / "logs" / "run.log"
        self.log = _run_logger(self.log_path)
        self.results: dict[str, Any] = {"schema": RESULTS_SCHEMA}
        if fresh:
            self.start_fresh()
        elif self.results_path.exists():
            self.results = read_results(self.results_path)

    def start_fresh(self) -> None:
        """Begin new results; the old ones move to ``results.previous.json``, old outputs go."""
        if self.results_path.exists():
            os.replace(self.results_path, self.path / PREVIOUS_RESULTS)
        for name in ("report.html", "report.md"):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / "plots", ignore_errors=True)
        self.results = {"schema": RESULTS_SCHEMA}

    def subdir(self, name: str) -> Path:
        """Return (creating it) a folder inside the run: ``checkpoints``, ``plots``, ..."""
        return ensure_dir(self.path / name, "folder")

    def record(self, key: str, value: Any) -> None:
        """Set ``results[key]`` and save ``results.json``."""
        self.results[key] = value
        self.save()

    def save(self) -> None:
        """Write ``results.json`` atomically."""
        write_json(self.results_path, self.results)


def _run_logger(path: Path) -> logging.Logger:
    ensure_dir(path.parent, "log folder")
    logger = logging.getLogger(f"kwscompress.run.{path.parent.parent.resolve()}")
    if not logger.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # The run's log is its file: a library that configures the root logger (TensorFlow
        # does) must not echo every stage line onto the user's terminal.
        logger.propagate = False
    return logger


def check_folder_path(path: Path, what: str) -> None:
    """Raise :class:`KwsError` when ``path`` or one of its existing parents is not a folder.

    Nothing is created: this lets a command fail before any work when a path points at a file.
    """
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise KwsError(
                    f"{what} {str(path)!r} cannot be used: {str(candidate)!r} is a file, "
                    "not a folder; choose another path"
                )
            return


def environment() -> dict[str, Any]:
    """What the numbers of a run depend on besides the config: CPU, library versions.

    Float training is reproducible on one machine but not across CPU models (oneDNN and MKL
    pick kernels by instruction set), so two runs compare only alongside this record.
    """
    import platform

    import numpy
    import torch

    onednn = next(
        (
            line.split(" v", 1)[1].split()[0]
            for line in torch.__config__.show().splitlines()
            if "DNN v" in line
        ),
        None,
    )
    return {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onednn": onednn,
        "mkldnn_enabled": bool(torch.backends.mkldnn.is_available()),
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
