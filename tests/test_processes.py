"""Long-running commands stop whole, within seconds, however they are stopped (the server here; `dev` in the
tests that start it, with Ctrl-C and with SIGTERM)."""

import signal
import subprocess
import sys

import pytest

from conftest import ROOT, stop_and_check
from shared_code_location.net import free_port, http_ok, wait_until


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to `python scripts/cli.py serve &`


@pytest.mark.parametrize(
    ("how", "background"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "sigint-when-started-in-background"],
)
def test_serve_stops_everything_within_seconds(how, background, tiny_pipeline):
    env, _, result = tiny_pipeline
    assert result.returncode == 0, result.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=_ignore_sigint if background else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 60, alive=lambda: process.poll() is None)
    # The old CLI took about 24 s after SIGTERM, and stopped nothing at all when started in the background.
    stop_and_check(process, how, limit=8)
    assert process.returncode == 128 + how
