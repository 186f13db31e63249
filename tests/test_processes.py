"""Long-running commands stop whole, within seconds, however they are stopped (the server here; `dev` in the
tests that start it, with Ctrl-C and with SIGTERM)."""

import re
import signal
import subprocess
import sys

import pytest

from conftest import LOCATION_NAMES, ROOT, stop_and_check
from shared_code_location.runtime.net import free_port, http_ok, wait_until


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


#: What `dev` and `up` may print when nothing fails: where the logs go, one line per process started and per
#: location loaded, the summary, and the signal that stopped them.
QUIET_LINE = re.compile(
    r"(dev|up): each process logs to \S+/"
    r"|  started \S+ \(pid \d+\)"
    r"|  loaded \S+ \(\d+\.\d s\)"
    r"|(dev|stack) up in .*"
    r"|(SIGINT|SIGTERM): stopped"
)


def assert_quiet(output: str) -> None:
    """Nothing but the lines a start and a stop print: no traceback, no gRPC error, no log line of a child."""
    noise = [line for line in output.splitlines() if line.strip() and not QUIET_LINE.fullmatch(line)]
    assert not noise, "\n".join(noise[:40])


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_dev_says_one_line_per_process_and_location_and_stops_without_a_traceback(how, isolated_env, tmp_path):
    port = free_port()
    output = tmp_path / "dev.out"
    with open(output, "w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "cli.py"), "dev", "--port", str(port)],
                                   cwd=ROOT, env=isolated_env, start_new_session=True, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        up = wait_until(lambda: "dev up in" in output.read_text(), 180, alive=lambda: process.poll() is None)
        assert up, output.read_text()[-3000:]
        stop_and_check(process, how, limit=20)
    text = output.read_text()
    assert_quiet(text)
    assert text.count("  loaded ") == len(LOCATION_NAMES) and f"{how.name}: stopped" in text
