"""Automation with a running daemon (`cli.py dev`), as a user sees it: the input sensor ingests a changed corpus and
each location's automation sensor carries it to a new release; an unchanged corpus retrains nothing; a failed
blocking check stops everything downstream of it."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import FAST_AUTOMATION, ROOT, copy_checkout, dagster_dev, graphql, run_cli, set_experiments

CORPUS = ROOT / "example_input_files_resource" / "tinyshakespeare.txt"

RUNS = """{ runsOrError { ... on Runs { results {
    runId jobName status startTime endTime assetSelection { path } tags { key value } } } } }"""
STALENESS = "{ assetNodes { assetKey { path } isMaterializable isPartitioned staleStatus } }"
PARTITION_STALENESS = """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { staleStatusByPartition } } }"""
MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations { runId } } } }"""
SENSOR = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 20) { timestamp status } } } } }"""
START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""


def selector(location: str, sensor: str) -> dict[str, str]:
    return {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": sensor}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, port: int) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(2)
    summary = [(r["jobName"], r["status"], [a["path"] for a in r["assetSelection"] or []]) for r in runs(port)]
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; runs: {summary}")


def runs(port: int) -> list[dict]:
    """Every run, oldest first."""
    return sorted(graphql(port, RUNS)["runsOrError"]["results"], key=lambda r: r["startTime"] or 0)


def materializations(port: int, *path: str) -> int:
    return len(graphql(port, MATERIALIZATIONS, {"path": list(path)})["assetOrError"]["assetMaterializations"])


def stale_status(port: int) -> dict[str, str]:
    """{asset: status}; a partitioned asset (an experiment each) is STALE if any partition is, and so on."""
    statuses = {}
    for node in graphql(port, STALENESS)["assetNodes"]:
        if not node["isMaterializable"]:
            continue
        found = [node["staleStatus"]]
        if node["isPartitioned"]:
            answer = graphql(port, PARTITION_STALENESS, {"path": node["assetKey"]["path"]})["assetNodeOrError"]
            found = answer["staleStatusByPartition"]
        statuses["/".join(node["assetKey"]["path"])] = next(
            (status for status in ("STALE", "MISSING") if status in found), "FRESH"
        )
    return statuses


def etl_assets(run: dict) -> list[list[str]]:
    """The asset paths a run materializes if they are all the ETL's (an ingest, or its combine step), else []."""
    paths = [asset["path"] for asset in run["assetSelection"] or []]
    return paths if paths and all(path[0] == "etl" for path in paths) else []


def release(latest: Path) -> str | None:
    return json.loads(latest.read_text())["version"] if latest.exists() else None


def test_a_corpus_change_reaches_a_new_release_and_a_failed_check_stops_it(isolated_env, tmp_path):
    inputs = tmp_path / "input"
    inputs.mkdir()
    corpus = inputs / "corpus.txt"
    text = CORPUS.read_text(encoding="utf-8")
    corpus.write_text(text, encoding="utf-8")
    env = isolated_env | FAST_AUTOMATION | {"ML_PIPELINE_INPUT_DIR": str(inputs), "ML_PIPELINE_TRAINING_PRESET": "tiny"}
    latest = tmp_path / "releases" / "latest.json"
    # A fork with one experiment: the automation is the same for one as for many, and each is a training run.
    fork = copy_checkout(tmp_path / "fork")
    experiments = [{"name": "only", "preset": "tiny"}]
    set_experiments(fork, experiments)

    with dagster_dev(env, root=fork) as port:
        # 1. Ingest once from the CLI; the daemon's automation sensors train, evaluate and release, each location
        #    in its own run, with no click.
        assert run_cli("run", "--only", "1_etl", env=env, root=fork).returncode == 0
        first = wait_for(lambda: release(latest), 480, "the first release", port)
        automated = [r for r in runs(port) if r["jobName"] == "__ASSET_JOB" and r["status"] == "SUCCESS"]
        launched = {a["path"][0] for r in automated for a in r["assetSelection"]}
        # The CLI's runs ingested the file and combined it; the sensors did the rest. The ETL's combine step has an
        # automation condition too (for files the input sensor ingests): a tick that saw the ingest land while the
        # CLI's combine ran may combine once more, which changes no data. An ingest is never automated.
        assert launched - {"etl"} == {"model", "evaluate", "deploy"}
        assert ["etl", "file_tokens"] not in [path for r in automated for path in etl_assets(r)]
        wait_for(lambda: set(stale_status(port).values()) == {"FRESH"}, 60, "every asset fresh", port)

        # 2. The input sensor (stopped by default). Its first tick finds the file ingested already (the instance
        #    says so): it launches nothing. Then a changed file goes all the way to a new release.
        input_sensor = selector("1_etl", "input_files_sensor")
        started = graphql(port, START_SENSOR, {"selector": input_sensor})
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

        def input_ticks() -> list[dict]:
            return graphql(port, SENSOR, {"selector": input_sensor})["sensorOrError"]["sensorState"]["ticks"]

        wait_for(lambda: input_ticks(), 120, "the input sensor's first tick", port)
        assert {tick["status"] for tick in input_ticks()} == {"SKIPPED"}
        corpus.write_text(text + "\n" + text[:20_000], encoding="utf-8")
        second = wait_for(lambda: release(latest) not in (None, first) and release(latest), 480, "a new release", port)
        ingests = [r for r in runs(port) if r["jobName"] == "ingest_file_job"]
        assert [r["status"] for r in ingests] == ["SUCCESS"]  # the changed file, once
        assert materializations(port, "model", "trained_model") == 2 * len(experiments)
        wait_for(lambda: set(stale_status(port).values()) == {"FRESH"}, 60, "every asset fresh again", port)

        # 3. New characters at the start (a new vocabulary) and a held-out end the vocabulary cannot cover: the
        #    ETL's blocking coverage check fails, the model turns stale in the UI, and no downstream location runs.
        corpus.write_text("Ἀθηνᾶ λέγει.\n" + text + "\n" + "Москва слезам не верит.\n" * 3000, encoding="utf-8")
        failed = wait_for(
            lambda: [r for r in runs(port) if r["status"] == "FAILURE" and ["etl", "vocabulary"] in etl_assets(r)],
            180,
            "the ETL's combine step that fails its check",
            port,
        )[-1]
        assert stale_status(port)["model/trained_model"] == "STALE"
        model_sensor = selector("2_model", "2_model_automation")

        def ticks_since_failure() -> int:
            state = graphql(port, SENSOR, {"selector": model_sensor})["sensorOrError"]["sensorState"]
            return sum(tick["timestamp"] > failed["endTime"] for tick in state["ticks"])

        wait_for(lambda: ticks_since_failure() >= 2, 120, "two model automation ticks after the failure", port)
        later = [r for r in runs(port) if r["startTime"] > failed["startTime"] and r["runId"] != failed["runId"]]
        assert [r for r in later if not etl_assets(r)] == []  # only the ETL ran: nothing downstream
        assert release(latest) == second
