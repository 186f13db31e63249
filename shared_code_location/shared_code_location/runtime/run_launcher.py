"""A run launcher whose run workers run monitoring can check, for runs launched by code servers on one machine.

Dagster's `DefaultRunLauncher` starts each run as a process of its location's code server (so in that location's
venv) but cannot tell run monitoring whether that process still lives: a worker killed with -9 would leave its run
STARTED forever. This one reads the worker's pid from the run's "Started process for run" event and checks it, so
monitoring marks the run failed within its poll interval, and run retries (`dagster/max_retries`) start it again.
`cli.py up` configures it; on separate machines use the Docker or Kubernetes run launcher, which check their own.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from shared_code_location.private_dagster import CheckRunHealthResult, WorkerStatus


class MonitoredRunLauncher(dg.DefaultRunLauncher):
    """`DefaultRunLauncher`, plus `check_run_worker_health` by the worker's pid."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run worker has not reported its pid yet")
        if _process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker (pid {pid}) is gone", run_worker_id=str(pid))

    def _worker_pid(self, run: dg.DagsterRun) -> int | None:
        records = self._instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
        for record in reversed(records):
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            metadata = getattr(event.event_specific_data, "metadata", None) or {}
            if "pid" in metadata and "Started process for run" in (record.event_log_entry.message or ""):
                return int(metadata["pid"].value)
        return None


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")
