"""Share a stage's independent jobs between this process and spawned helper processes.

The sweep's ``local`` executor forks its workers, which is safe because they only run torch.
A stage whose jobs run TensorFlow (the export stage converts and checks TFLite files) cannot
fork: by then this process has imported TensorFlow, whose thread pools do not survive a fork.
Helpers here are *spawned* instead: fresh interpreters that import what the jobs need (about
10 s for torch and TensorFlow on the 2-core machine), so sharing pays only for work of tens of
seconds. This process keeps working meanwhile: it takes jobs from the front of the list, the
helpers from the back, and the two meet wherever the jobs' lengths put them. A job the helpers
could not finish (a helper died, a job that would not pickle) runs here, so the outcome is the
same as running every job here, only sooner.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from kwscompress.errors import KwsError
from kwscompress.executors import one_torch_thread


def refuse_while_a_helper_starts(what: str) -> None:
    """Raise if this is a helper importing the script that started the run.

    A spawned helper imports the ``__main__`` script of the process that started it. A script
    that builds its pipeline at the top level, not under ``if __name__ == "__main__":``, would
    run the whole pipeline again in the helper, into the same run directory. Called where a
    pipeline starts, this stops the helper at once instead; the run's process then does the
    helper's share itself.
    """
    # multiprocessing's own marker for "this child is still importing its parent's modules".
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise KwsError(
            f"{what} started in a helper process while it imported your script: run the "
            'pipeline under `if __name__ == "__main__":` so that helpers (spawned by the '
            "export stage) can import the script without running it; the run goes on without "
            "the helper"
        )


_HELPER_LOST = object()
"""Put in place of an outcome when the helpers could not run a job."""


def run_alongside_spawned(
    work: Callable[[Any], Any],
    jobs: Sequence[Any],
    helpers: int,
    on_done: Callable[[int, Any], None],
    prepare: Callable[[], None] | None = None,
) -> None:
    """Run ``work(job)`` for every job, here and in ``helpers`` spawned processes.

    ``on_done(index, outcome)`` is called in this thread as each job ends. ``work`` and the
    jobs must pickle (``work`` a module-level function); ``helpers < 1`` or a single job runs
    everything here, in order. ``prepare`` (module-level, returning nothing) runs in each
    helper before it takes a job, to import what the jobs need: a helper still preparing when
    this process has done everything else gets no job, so a short list is never kept waiting
    for a helper's imports.
    """
    if helpers < 1 or len(jobs) < 2:
        for index, job in enumerate(jobs):
            on_done(index, work(job))
        return
    remaining = deque(range(len(jobs)))
    lock = threading.Lock()
    finished: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    context = multiprocessing.get_context("spawn")
    helper_count = min(helpers, len(jobs) - 1)
    pool = ProcessPoolExecutor(
        max_workers=helper_count, mp_context=context, initializer=one_torch_thread
    )

    def take(from_back: bool) -> int | None:
        with lock:
            if not remaining:
                return None
            return remaining.pop() if from_back else remaining.popleft()

    def feed_helper() -> None:
        # One thread per helper hands it a job at a time and waits for the outcome.
        if prepare is not None:
            try:
                pool.submit(prepare).result()
            except Exception:  # a helper that cannot prepare takes no job
                return
        while (index := take(from_back=True)) is not None:
            try:
                outcome = pool.submit(work, jobs[index]).result()
            except Exception:  # the helper died, the job would not pickle, or it raised
                finished.put((index, _HELPER_LOST))
                return  # what is left runs here
            finished.put((index, outcome))

    feeders = [threading.Thread(target=feed_helper, daemon=True) for _ in range(helper_count)]
    try:
        for feeder in feeders:
            feeder.start()
        done = 0
        while done < len(jobs):
            index = take(from_back=False)
            if index is not None:
                on_done(index, work(jobs[index]))
                done += 1
            # Collect what the helpers finished; wait for them only when nothing is left here.
            wait = index is None
            while done < len(jobs):
                try:
                    index, outcome = finished.get(block=wait)
                except queue.Empty:
                    break
                if outcome is _HELPER_LOST:
                    with lock:
                        remaining.appendleft(index)
                    break
                on_done(index, outcome)
                done += 1
                wait = False
    finally:
        # Every job is done (or this process is stopping): a helper still preparing is left to
        # finish its imports and exit on its own.
        pool.shutdown(wait=False, cancel_futures=True)
