import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "scripts" / "cli.py")]


@pytest.fixture
def isolated_env(tmp_path) -> dict[str, str]:
    """Environment that sends Dagster's instance, pipeline storage and releases to temporary folders."""
    return os.environ | {
        "ML_PIPELINE_DAGSTER_HOME": str(tmp_path / "home"),
        "ML_PIPELINE_STORAGE_URI": str(tmp_path / "storage"),
        "ML_PIPELINE_OUTPUT_DIR": str(tmp_path / "releases"),
    }


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST a query to the webserver's GraphQL endpoint; its `data`."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    answer = json.load(urllib.request.urlopen(request, timeout=10))
    if answer.get("errors"):
        raise AssertionError(answer["errors"])
    return answer["data"]


def location_statuses(port: int) -> dict[str, tuple[str, str]]:
    """{location: (load status, type of what loaded)}."""
    entries = graphql(
        port,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename } } } } }",
    )["workspaceOrError"]["locationEntries"]
    return {e["name"]: (e["loadStatus"], (e["locationOrLoadError"] or {}).get("__typename")) for e in entries}


@contextlib.contextmanager
def dagster_dev(env: dict[str, str], timeout: float = 180) -> Iterator[int]:
    """`cli.py dev` (webserver + daemon, each location in its venv) on a free port, once every location loaded.
    Yields the port; stops it with Ctrl-C, as a user would, and fails if it does not stop within 30 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, statuses = time.monotonic() + timeout, {}
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                statuses = location_statuses(port)
            if statuses and all(status == "LOADED" for status, _ in statuses.values()):
                break
        assert statuses and all(status == "LOADED" for status, _ in statuses.values()), statuses
        yield port
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("dev did not shut down within 30 s of Ctrl-C")
