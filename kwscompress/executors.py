"""The built-in sweep executor, ``local``, registered like any plugin (entry point ``executors``).

With ``[sweep] workers = 1`` every variant runs in this process, one after another. With more
workers (``0``, the default, means one per CPU core) they run in a pool of forked worker
processes: the shared payload (baseline weights and
features) is inherited through ``fork``, not copied per variant, and each worker uses one torch
thread so that the workers do not fight over cores. A worker that dies (killed, out of memory)
breaks the pool; the variants it may have been running are retried in a new pool up to
``[sweep] retries`` times, then reported as failed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from kwscompress import hookimpl
from kwscompress.protocols import Executor

_SHARED: Any = None
"""The payload of the running pool, set before the workers fork."""


class WorkerDied(RuntimeError):
    """A variant's worker process ended without a result, more often than retries allow."""


class LocalExecutor:
    """Runs variants in this process or in a pool of forked worker processes."""

    name = "local"
    description = "this machine: in-process, or a pool of `workers` forked processes"

    def run(
        self,
        task: Callable[[Any, Any], Any],
        shared: Any,
        jobs: Sequence[Any],
        options: dict[str, Any],
        on_done: Callable[[int, Any], None],
    ) -> None:
        """Run every job, calling ``on_done(index, outcome)`` here as each one ends."""
        workers = int(options.get("workers", 1)) or os.cpu_count() or 1
        if workers <= 1 or not jobs:
            for index, job in enumerate(jobs):
                on_done(index, task(shared, job))
            return
        self._run_pool(task, shared, jobs, workers, int(options.get("retries", 2)), on_done)

    @staticmethod
    def _run_pool(
        task: Callable[[Any, Any], Any],
        shared: Any,
        jobs: Sequence[Any],
        workers: int,
        retries: int,
        on_done: Callable[[int, Any], None],
    ) -> None:
        global _SHARED
        _SHARED = shared
        attempts = dict.fromkeys(range(len(jobs)), 0)
        pending = list(range(len(jobs)))
        context = multiprocessing.get_context("fork")
        try:
            while pending:
                with ProcessPoolExecutor(
                    max_workers=workers, mp_context=context, initializer=one_torch_thread
                ) as pool:
                    futures: dict[Future[Any], int] = {
                        pool.submit(_call, task, jobs[i]): i for i in pending
                    }
                    pending = []
                    while futures:
                        done, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for future in done:
                            index = futures.pop(future)
                            try:
                                outcome = future.result()
                            except BrokenProcessPool:
                                attempts[index] += 1
                                if attempts[index] <= retries:
                                    pending.append(index)
                                    continue
                                outcome = WorkerDied(f"its worker died {attempts[index]} times")
                            except Exception as exc:  # the task itself raised
                                outcome = exc
                            on_done(index, outcome)
        finally:
            _SHARED = None


def one_torch_thread() -> None:
    """Make this (worker) process compute on one torch thread, so that workers and the
    process that started them do not fight over cores."""
    import torch

    torch.set_num_threads(1)


def _call(task: Callable[[Any, Any], Any], job: Any) -> Any:
    return task(_SHARED, job)


@hookimpl
def kws_register_executors() -> list[Executor]:
    """The ``local`` executor."""
    return [LocalExecutor()]
