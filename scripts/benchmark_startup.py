"""Start-up benchmark (figures, not pass/fail): `python scripts/benchmark_startup.py [--runs 5]`, after `setup`.

Starts `cli.py dev` and `cli.py up` RUNS times each, every time on a fresh instance in a temporary folder, and
prints the seconds until the webserver shows every location loaded without error (`RepositoryLocation`, not a
`PythonError`), the stack's own breakdown (when PostgreSQL, the code servers and the webserver were ready) and how
long Ctrl-C took to stop everything.
"""

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from pipeline_cli.locations import LOCATIONS  # noqa: E402
from pipeline_cli.stack import location_load_states  # noqa: E402
from shared_code_location.runtime.net import free_port  # noqa: E402


def loaded(port: int) -> bool:
    """Whether the webserver on `port` shows every location loaded without error."""
    states = location_load_states(f"http://127.0.0.1:{port}")
    return states == dict.fromkeys((env.name for env in LOCATIONS), "RepositoryLocation")


def once(command: str, folder: Path) -> dict:
    """One start of `cli.py COMMAND` on a fresh instance under `folder`: seconds to loaded, breakdown, stop."""
    port = free_port()
    env = os.environ | {
        "ML_PIPELINE_DAGSTER_HOME": str(folder / "home"),
        "ML_PIPELINE_STORAGE_URI": str(folder / "storage"),
        "ML_PIPELINE_OUTPUT_DIR": str(folder / "releases"),
        "ML_PIPELINE_POSTGRES_URL": "",  # `up` starts the project's own PostgreSQL
    }
    log = folder / f"{command}.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "cli.py"), command, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while not _try(loaded, port):
            if process.poll() is not None or time.monotonic() - started > 180:
                sys.exit(f"`cli.py {command}` did not load every location:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        seconds = time.monotonic() - started
        waited = time.monotonic()
        while " up in " not in log.read_text() and time.monotonic() - waited < 20:  # its breakdown, printed last
            time.sleep(0.1)
    finally:
        stopping = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        stop = time.monotonic() - stopping
    breakdown = re.search(r"up in [\d.]+ s \(([^)]*)\)", log.read_text())
    return {"loaded_s": seconds, "stop_s": stop, "breakdown": breakdown.group(1) if breakdown else ""}


def _try(check, *args) -> bool:
    with contextlib.suppress(OSError, KeyError, TypeError):
        return check(*args)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("commands", nargs="*", default=["dev", "up"], help="dev, up or both (default)")
    args = parser.parse_args()
    for command in args.commands:
        results = []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix=f"startup-{command}-") as folder:
                result = once(command, Path(folder))
            results.append(result)
            print(
                f"{command} #{run + 1}: every location loaded in {result['loaded_s']:.1f} s "
                f"({result['breakdown']}); stopped in {result['stop_s']:.1f} s",
                flush=True,
            )
        seconds = [r["loaded_s"] for r in results]
        print(
            f"{command}: median {statistics.median(seconds):.1f} s, min {min(seconds):.1f}, max {max(seconds):.1f} "
            f"over {len(seconds)} fresh instances (goal <= 15 s)"
        )


if __name__ == "__main__":
    main()
