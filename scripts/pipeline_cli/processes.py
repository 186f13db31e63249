"""Long-running process trees (`dev`, `serve`): one new process group, stopped whole on Ctrl-C, SIGINT or SIGTERM.

Only the main thread waits on the children, by polling: a signal handler that waited on them itself would block on
the lock `Popen.wait()` holds and run through every escalation stage (the old 24-second SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

#: After each signal, how long the group gets to exit before the next, harder one.
ESCALATION = ((signal.SIGINT, 12.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))


def _child_setup(group: int) -> None:
    os.setpgid(0, group)
    # A shell that starts a job in the background leaves SIGINT ignored, and exec keeps that: restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform == "linux":
        # Should this CLI be killed outright (SIGKILL skips every handler), the children get a Ctrl-C instead of
        # living on in their own process group.
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def _wait_all(processes: Sequence[subprocess.Popen], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p in processes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(group: int, processes: Sequence[subprocess.Popen]) -> None:
    """Interrupt the group as Ctrl-C would; escalate to SIGTERM, then SIGKILL, for whatever is still running."""
    for sig, seconds in ESCALATION:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        if _wait_all(processes, seconds):
            return


def supervise(
    command: list[str], env: dict[str, str], cwd: Path, helpers: Sequence[tuple[list[str], Path]] = ()
) -> int:
    """Run `command` with `helpers` ((command, cwd) pairs) beside it, all in one new process group, until `command`
    exits or this process gets SIGINT (Ctrl-C) or SIGTERM; then stop the whole group. Returns the exit code: the
    command's own, or 128 + the signal's number.

    A helper that exits on its own is reported at once (a code server that crashed), not silently left dead.
    """
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    # Installed before any child starts, so that a signal in between still stops what did start.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started: list[subprocess.Popen] = []
    try:
        for helper_command, helper_cwd in helpers:
            group = started[0].pid if started else 0
            started.append(
                subprocess.Popen(helper_command, cwd=helper_cwd, env=env, preexec_fn=lambda g=group: _child_setup(g))
            )
        group = started[0].pid if started else 0
        main = subprocess.Popen(command, cwd=cwd, env=env, preexec_fn=lambda: _child_setup(group))
        group = group or main.pid
        everything = [*started, main]
        reported: set[int] = set()
        while not received and main.poll() is None:
            for helper in started:
                if helper.poll() is not None and helper.pid not in reported:
                    reported.add(helper.pid)
                    click.secho(f"warning: {' '.join(helper.args[:6])} … exited ({helper.returncode})", fg="yellow")
            time.sleep(0.1)
        if received:
            click.echo(f"\n{signal.Signals(received[0]).name}: shutting down ...", err=True)
        stop_group(group, everything)
        return 128 + received[0] if received else main.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
