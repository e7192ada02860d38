"""Run the variants of a sweep as Ray tasks, on a laptop or on a cluster.

The shared payload (baseline weights and every feature array) goes into Ray's object store
once (``ray.put``); each variant is one task that receives a reference to it, so no shared
filesystem is needed and nothing is copied per variant. Each task returns its row and its
model's bytes to the driver, which writes ``results.json`` and the variant cache exactly as a
local sweep does. Rows equal a local run's, except ``node`` (the Ray node that ran the variant),
``device`` (``cuda`` when the task had a GPU) and the timings.

A task whose worker process dies, or whose node is lost, is retried by Ray up to
``[sweep] retries`` times, then reported as failed. A variant whose plugin raises fails alone,
as locally (that is a failed row, not a task error).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from kwscompress.errors import KwsError

ADDRESS_CHOICES = (
    "'auto' (the cluster this machine belongs to), 'local' (start Ray here), 'host:port' "
    "(a head node's GCS address) or 'ray://host:port' (Ray Client)"
)
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+")


class RayExecutor:
    """Sweeps on Ray: one task per variant, the shared payload put in the object store once."""

    name = "ray"
    description = "a Ray cluster (address, num_cpus, num_gpus per variant); extra: kwscompress[ray]"

    def run(
        self,
        task: Callable[[Any, Any], Any],
        shared: Any,
        jobs: Sequence[Any],
        options: dict[str, Any],
        on_done: Callable[[int, Any], None],
    ) -> None:
        """Submit every job as a task and report each outcome as it arrives."""
        if not jobs:
            return
        ray = import_ray()
        started_here = connect(ray, str(options.get("address", "auto")))
        pending: dict[Any, int] = {}
        try:
            shared_ref = ray.put(shared)
            remote = ray.remote(_run_task).options(
                num_cpus=float(options.get("num_cpus", 1.0)),
                num_gpus=float(options.get("num_gpus", 0.0)),
                max_retries=int(options.get("retries", 2)),
                retry_exceptions=False,
            )
            for index, job in enumerate(jobs):
                pending[remote.remote(task, shared_ref, job)] = index
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # worker died beyond the retries, node lost, ...
                        outcome = exc
                    on_done(index, outcome)
        except KeyboardInterrupt:
            # Finished rows are already saved by on_done; stop the rest so the cluster is free.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()


def import_ray() -> Any:
    """The ``ray`` module, or a KwsError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise KwsError(
            "[sweep] executor = 'ray' needs Ray: pip install 'kwscompress[ray]'"
        ) from None
    return ray


def connect(ray: Any, address: str) -> bool:
    """Connect to (or start) the cluster; True when this call started Ray and must stop it."""
    if ray.is_initialized():
        return False
    if address not in ("auto", "local") and not _ADDRESS.fullmatch(address):
        raise KwsError(f"[sweep] address must be {ADDRESS_CHOICES}, got {address!r}")
    try:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise KwsError(
            f"[sweep] address {address!r}: no Ray cluster answered ({exc}); start one with "
            "`ray start --head`, or use address = 'local'"
        ) from None
    return True


def _run_task(task: Callable[[Any, Any], Any], shared: Any, job: Any) -> Any:
    import ray

    outcome = task(shared, job)
    row = getattr(outcome, "row", None)
    if isinstance(row, dict):
        context = ray.get_runtime_context()
        row["node"] = context.get_node_id()
        row["resources"] = context.get_assigned_resources()
    return outcome
