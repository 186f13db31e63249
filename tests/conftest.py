import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # the CLI's package: the tests read the locations as the CLI does

from pipeline_cli.locations import LOCATIONS  # noqa: E402
from shared_code_location import settings  # noqa: E402
from shared_code_location.runtime.net import free_port  # noqa: E402

LOCATION_NAMES = [env.name for env in LOCATIONS]
#: The model location's experiments file, and the experiments it declares, in order (read as data, not imported).
EXPERIMENTS_YAML = ROOT / "2_model_code_location" / "model_code_location" / "defs" / "experiments" / "defs.yaml"
_DECLARED = yaml.safe_load(EXPERIMENTS_YAML.read_text())["attributes"]["experiments"]
EXPERIMENTS = [entry["name"] for entry in _DECLARED]
#: Those that train on GPUs, which this machine (CPU only) skips, and the rest, which it trains.
GPU_EXPERIMENTS = [entry["name"] for entry in _DECLARED if entry.get("gpus_per_worker")]
CPU_EXPERIMENTS = [name for name in EXPERIMENTS if name not in GPU_EXPERIMENTS]


def set_experiments(fork: Path, experiments: list[dict]) -> None:
    """Replace the experiments a fork's model location declares (its defs.yaml) with `experiments`."""
    path = fork / EXPERIMENTS_YAML.relative_to(ROOT)
    document = yaml.safe_load(path.read_text())
    document["attributes"]["experiments"] = experiments
    path.write_text(yaml.safe_dump(document, sort_keys=False))


#: For the tests with a running daemon: automation sensors evaluate every 5 s instead of 15, so that each hop of
#: the pipeline from location to location waits less (the setting a deployment can tune too).
FAST_AUTOMATION = {"ML_PIPELINE_AUTOMATION_INTERVAL": "5"}


def isolated(folder: Path) -> dict[str, str]:
    """Environment that sends Dagster's instance, pipeline storage and releases to folders under `folder`."""
    return os.environ | {
        settings.DAGSTER_HOME.name: str(folder / "home"),
        settings.STORAGE_URI.name: str(folder / "storage"),
        settings.OUTPUT_DIR.name: str(folder / "releases"),
    }


@pytest.fixture
def isolated_env(tmp_path) -> dict[str, str]:
    """`isolated` under this test's temporary folder."""
    return isolated(tmp_path)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> tuple[dict[str, str], Path, subprocess.CompletedProcess]:
    """The whole pipeline run once with the tiny preset, shared by the tests that need a trained model or a
    release: (its environment, its folder, the `cli.py run` result)."""
    folder = tmp_path_factory.mktemp("pipeline")
    env = isolated(folder)
    return env, folder, run_cli("run", "--preset", "tiny", env=env)


@pytest.fixture(scope="session")
def images():
    """Every image of the project (the CPU build of PyTorch), built once with the container engine; skips without
    one. The list of what was built, with the seconds each took."""
    from containers import require_engine
    from pipeline_cli.images import build_all, project_images

    require_engine()
    return build_all(project_images("cpu"))


def copy_checkout(root: Path) -> Path:
    """A copy of the checkout's files (git's list) at `root`, with every venv linked from this checkout (never
    written to): a fork to edit freely. Its code, not this checkout's, is what Dagster loads there."""
    import shutil

    from pipeline_cli.locations import ENVIRONMENTS

    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    for name in listing.stdout.splitlines():
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    (root / ".venv").symlink_to(ROOT / ".venv")
    for env in ENVIRONMENTS:
        (root / env.folder / ".venv").symlink_to(env.venv)
    return root


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, root: Path = ROOT
) -> subprocess.CompletedProcess:
    """`python scripts/cli.py ARGS` in `root` (this checkout by default)."""
    cli = [sys.executable, str(root / "scripts" / "cli.py")]
    return subprocess.run([*cli, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


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


def child_groups(pid: int) -> set[int]:
    """The process groups of `pid`'s children (the CLI puts what it starts in a group of their own)."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # fields: state, ppid, pgrp, ...
                groups.add(int(fields[2]))
    return groups


def group_alive(group: int) -> bool:
    """Whether any process of `group` still runs."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def stop_and_check(process: subprocess.Popen, how: signal.Signals, limit: float) -> float:
    """Send `how` to the CLI's own process group (what Ctrl-C in a terminal does) and return the seconds until
    the CLI and every process group it started are gone; fails past `limit`, killing what is left."""
    groups = child_groups(process.pid)
    assert groups, "the CLI started no process"
    started = time.monotonic()
    os.killpg(process.pid, how)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=limit)
        while any(group_alive(g) for g in groups) and time.monotonic() - started < limit:
            time.sleep(0.1)
    finally:
        elapsed = time.monotonic() - started
        left = [g for g in groups if group_alive(g)]
        for group in [process.pid, *left]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    assert process.returncode is not None, f"the CLI did not exit within {limit} s of {how.name}"
    assert not left, f"process groups {left} still running {elapsed:.1f} s after {how.name}"
    return elapsed


@contextlib.contextmanager
def dagster_dev(
    env: dict[str, str], timeout: float = 180, root: Path = ROOT, stop_with: signal.Signals = signal.SIGINT
) -> Iterator[int]:
    """`cli.py dev` (webserver + daemon, each location in its venv) on a free port, once every location loaded.
    Yields the port; stops it with `stop_with` (Ctrl-C by default, as a user would), and fails unless the CLI and
    everything it started are gone within 20 s."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(root / "scripts" / "cli.py"), "dev", "--port", str(port)],
        cwd=root,
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
            # Loaded without error: a location the webserver found not yet listening shows LOADED with an error
            # until its watcher refreshes it, a second after its code server answers.
            if statuses and set(statuses.values()) == {("LOADED", "RepositoryLocation")}:
                break
        assert statuses and set(statuses.values()) == {("LOADED", "RepositoryLocation")}, statuses
        yield port
    finally:
        stop_and_check(process, stop_with, limit=20)
