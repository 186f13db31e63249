"""Long-running process trees (`dev`, `serve`, `up`): one new process group, stopped whole on Ctrl-C, SIGINT or
SIGTERM, also when the CLI was started in the background.

Only the main thread waits on the children, by polling: a signal handler that waited on them itself would block on
the lock `Popen.wait()` holds and run through every escalation stage (the old 24-second SIGTERM).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

#: Loaded here, not in the child: a child that runs as another user may not be able to import anything.
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
#: After each signal, how long the group gets to exit before the next, harder one.
ESCALATION = ((signal.SIGINT, 12.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))


def _child_setup(group: int) -> None:
    try:
        os.setpgid(0, group)
    except OSError:  # the group is gone (every member exited): start a new one
        os.setpgid(0, 0)
    # A shell that starts a job in the background leaves SIGINT ignored, and exec keeps that: restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _LIBC is not None:
        # Should this CLI be killed outright (SIGKILL skips every handler), the children get a Ctrl-C instead of
        # living on in their own process group.
        _LIBC.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


class Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: the process group is being stopped."""


class ProcessGroup:
    """Children in one new process group, and this process's SIGINT, SIGTERM and SIGHUP turned into a stop.

    Use as a context manager: leaving it (normally, by an error, or by a signal) stops every child.
    """

    def __init__(self, escalation: Sequence[tuple[signal.Signals, float]] = ESCALATION) -> None:
        self.escalation = escalation
        self.children: list[subprocess.Popen] = []
        self.last: list[subprocess.Popen] = []  # each in a group of its own, stopped once the rest has exited
        self.received: list[int] = []
        self.group = 0  # the first child's pid: the group's id for as long as any member lives
        self._previous: dict = {}

    def __enter__(self) -> ProcessGroup:
        # Installed before any child starts, so that a signal in between still stops what did start.
        self._previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.stop()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received.append(signum)

    def start(
        self, command: list[str], cwd: Path, env: dict[str, str], last: bool = False, **popen: object
    ) -> subprocess.Popen:
        """Start `command` in the group. `last`: stop it only once every other process (the children's children
        too) has exited, as a database must be, which the others write their final state to."""
        self.check()
        group = 0 if last else self.group  # 0: a new group, led by the child
        child = subprocess.Popen(command, cwd=cwd, env=env, preexec_fn=lambda: _child_setup(group), **popen)
        if last:
            self.last.append(child)
        else:
            self.group = self.group or child.pid
        self.children.append(child)
        return child

    def forget(self, child: subprocess.Popen) -> None:
        """Stop watching `child`, which has exited (before starting its replacement)."""
        self.children.remove(child)
        if child in self.last:
            self.last.remove(child)

    def check(self) -> None:
        """Raise `Stopped` if a stop signal has arrived."""
        if self.received:
            raise Stopped(signal.Signals(self.received[0]).name)

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise `Stopped` as soon as a stop signal arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        self.check()

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until true (an `OSError`, such as a refused connection, counts as not yet); `TimeoutError`
        naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout

        def ready_now() -> bool:
            try:
                return ready()
            except OSError:
                return False

        while not ready_now():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")
            self.sleep(0.2)

    def stop(self) -> None:
        """Interrupt the group as Ctrl-C would; escalate to SIGTERM, then SIGKILL, for whatever is still running
        (the children's own children included: a run worker outlives its code server). Then the same for the
        processes started `last`."""
        self._stop(self.group, [child for child in self.children if child not in self.last])
        for child in self.last:
            self._stop(child.pid, [child])

    def _stop(self, group: int, children: list[subprocess.Popen]) -> None:
        def running() -> bool:
            return any(child.poll() is None for child in children) or (bool(group) and _group_alive(group))

        for sig, seconds in self.escalation:
            if not running():
                return
            if group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, sig)
            for child in children:  # one that had to start a group of its own still gets the signal
                if child.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(sig)
            deadline = time.monotonic() + seconds
            while running() and time.monotonic() < deadline:
                time.sleep(0.05)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member runs as another user (PostgreSQL's own, when started as root)
        return True
    return True


def supervise(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run `command` in a new process group until it exits or this process gets SIGINT (Ctrl-C) or SIGTERM; then
    stop the whole group. Returns the exit code: the command's own, or 128 + the signal's number."""
    with ProcessGroup() as group:
        try:
            main = group.start(command, cwd, env)
            while main.poll() is None:
                group.sleep(0.1)
            return main.returncode
        except Stopped as stop:
            click.echo(f"\n{stop}: shutting down ...", err=True)
            return 128 + group.received[0]
