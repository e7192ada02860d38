"""Jobs shared between this process and spawned helpers (kwscompress.spawned)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from kwscompress.spawned import run_alongside_spawned


def _slow_pid(job: tuple[int, object]) -> tuple[int, int]:
    """The job's number and the process that ran it, after a pause long enough to share."""
    time.sleep(0.4)
    return job[0], os.getpid()


def _die_in_a_helper(job: tuple[int, int]) -> tuple[int, int]:
    number, parent = job
    if os.getpid() != parent:
        os._exit(3)
    return number, os.getpid()


def _prepare_slowly() -> None:
    time.sleep(6)


def _collect(work, jobs, helpers: int, **kwargs) -> dict[int, object]:
    outcomes: dict[int, object] = {}

    def on_done(index: int, outcome: object) -> None:
        assert threading.current_thread() is threading.main_thread()
        assert index not in outcomes
        outcomes[index] = outcome

    run_alongside_spawned(work, jobs, helpers, on_done, **kwargs)
    return outcomes


def test_jobs_are_shared_with_a_helper_and_each_runs_once() -> None:
    jobs = [(i, None) for i in range(24)]
    outcomes = _collect(_slow_pid, jobs, helpers=1)
    assert sorted(outcomes) == list(range(24))
    assert all(outcomes[i][0] == i for i in outcomes)
    pids = {pid for _, pid in outcomes.values()}
    # The helper needs a few seconds to start (it imports torch); 24 pauses of 0.4 s leave it
    # work to take from the back of the list.
    assert os.getpid() in pids and len(pids) == 2
    helper = sorted(i for i, (_, pid) in outcomes.items() if pid != os.getpid())
    assert helper == list(range(24 - len(helper), 24))


def test_without_helpers_every_job_runs_here_in_order() -> None:
    order: list[int] = []
    run_alongside_spawned(
        _slow_pid, [(i, None) for i in range(3)], 0, lambda i, o: order.append(o[0])
    )
    assert order == [0, 1, 2]


def test_a_job_that_will_not_pickle_runs_here() -> None:
    jobs = [(0, threading.Lock()), (1, threading.Lock()), (2, None)]
    outcomes = _collect(_slow_pid, jobs, helpers=1)
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[0] == (0, os.getpid()) and outcomes[1] == (1, os.getpid())


def test_jobs_of_a_helper_that_died_run_here() -> None:
    outcomes = _collect(_die_in_a_helper, [(i, os.getpid()) for i in range(6)], helpers=1)
    assert outcomes == {i: (i, os.getpid()) for i in range(6)}


def test_a_helper_still_preparing_gets_no_job_and_keeps_nothing_waiting() -> None:
    started = time.perf_counter()
    outcomes = _collect(_slow_pid, [(i, None) for i in range(3)], 1, prepare=_prepare_slowly)
    assert {pid for _, pid in outcomes.values()} == {os.getpid()}
    assert time.perf_counter() - started < 5


UNGUARDED_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from kwscompress.pipeline import Pipeline
from kwscompress.spawned import run_alongside_spawned
from test_spawned import _slow_pid

pipe = Pipeline()  # at the top level: a helper importing this script gets here too
print("PIPELINE IN", os.getpid(), flush=True)
done = {{}}
run_alongside_spawned(
    _slow_pid, [(i, None) for i in range(6)], 1, lambda i, o: done.__setitem__(i, o[1])
)
print("JOBS", len(done), "ALL HERE", set(done.values()) == {{os.getpid()}}, flush=True)
"""


def test_a_script_without_a_main_guard_does_not_run_its_pipeline_in_a_helper(
    tmp_path: Path,
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "KWSCOMPRESS_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The helper stopped where the pipeline was built; the script's process did every job.
    assert result.stdout.count("PIPELINE IN") == 1
    assert "JOBS 6 ALL HERE True" in result.stdout
    assert "started in a helper process while it imported your script" in result.stderr
