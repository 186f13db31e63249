"""Experiments with a running daemon (`cli.py dev`, in a fork of this checkout whose experiments YAML the test
edits as a user would): adding experiments trains those and nothing else; the release moves to the better one, once;
one whose gate fails never wins; changing one experiment retrains that one alone. (Training on Ray is the same asset
code: test_end_to_end.py runs an experiment of two workers.)"""

import json
import time
from pathlib import Path

from conftest import (
    FAST_AUTOMATION,
    copy_checkout,
    dagster_dev,
    graphql,
    isolated,
    location_statuses,
    run_cli,
    set_experiments,
)

MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations { partition runId } } } }"""
METADATA = """query($path: [String!]!, $partition: String!) { assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) { metadataEntries { label
        ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }"""
TICKS = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 100) { timestamp } } } } }"""
RELOAD = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }"""


def partitions_materialized(port: int, *path: str) -> list[str | None]:
    """The partition of each materialization of the asset, oldest first."""
    found = graphql(port, MATERIALIZATIONS, {"path": list(path)})["assetOrError"]
    return [m["partition"] for m in reversed((found or {}).get("assetMaterializations") or [])]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def released_experiment(latest: Path) -> str | None:
    if not latest.exists():
        return None
    pointer = json.loads(latest.read_text())
    card = json.loads((latest.parent / pointer["path"] / "model_card.json").read_text())
    return card["experiment"]["name"]


def reload_model_location(port: int) -> None:
    assert (
        graphql(port, RELOAD, {"name": "2_model"})["reloadRepositoryLocation"]["__typename"] == "WorkspaceLocationEntry"
    )
    wait_for(lambda: location_statuses(port)["2_model"][0] == "LOADED", 60, "2_model loaded again")


def automation_ticks(port: int, location: str) -> int:
    """How many ticks the location's automation sensor has made (up to the last 100)."""
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__",
                "sensorName": f"{location}_automation"}  # fmt: skip
    return len(graphql(port, TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"])


def test_an_added_experiment_trains_alone_and_is_released_only_when_better(tmp_path):
    fork = copy_checkout(tmp_path / "fork")
    tiny = {"preset": "tiny", "overrides": {"eval_interval": 50, "checkpoint_interval": 0}}
    set_experiments(fork, [{"name": "short", **tiny, "overrides": tiny["overrides"] | {"max_iters": 260}}])
    env = isolated(tmp_path) | FAST_AUTOMATION
    latest = tmp_path / "releases" / "latest.json"

    with dagster_dev(env, root=fork) as port:
        # The corpus once from the CLI; the daemon trains the one experiment, evaluates it and releases it.
        assert run_cli("run", "--only", "1_etl", env=env, root=fork).returncode == 0
        wait_for(lambda: released_experiment(latest) == "short", 420, "the first release (short)")
        first = json.loads(latest.read_text())["version"]

        # Two experiments added to the YAML at once: a better one and a worse one, too short to beat the bigram
        # baseline. They alone train; the leaderboard waits for both (one ranking for one change) and ranks them
        # beside the first; the worse one's failed gate keeps it out, and the release moves to the better one, once.
        short = {"name": "short", **tiny, "overrides": tiny["overrides"] | {"max_iters": 260}}
        longer = {"name": "longer", **tiny, "overrides": tiny["overrides"] | {"max_iters": 600}}
        worse = {"name": "worse", **tiny, "overrides": tiny["overrides"] | {"max_iters": 30}}
        set_experiments(fork, [short, longer, worse])
        reload_model_location(port)
        wait_for(lambda: released_experiment(latest) == "longer", 600, "the release of the better experiment")
        card = json.loads((latest.parent / json.loads(latest.read_text())["path"] / "model_card.json").read_text())
        ranked = {row["experiment"]: row["gates_passed"] for row in card["experiment"]["leaderboard"]}
        assert ranked == {"longer": True, "short": True, "worse": False}, ranked
        assert partitions_materialized(port, "model", "trained_model")[0] == "short"
        assert sorted(partitions_materialized(port, "model", "trained_model")) == ["longer", "short", "worse"]
        assert sorted(partitions_materialized(port, "evaluate", "evaluation_report")) == ["longer", "short", "worse"]
        second = json.loads(latest.read_text())["version"]
        assert second != first
        deploy_ticks = automation_ticks(port, "4_deploy")
        wait_for(lambda: automation_ticks(port, "4_deploy") >= deploy_ticks + 2, 120, "two more deploy ticks")
        assert json.loads(latest.read_text())["version"] == second
        assert len(partitions_materialized(port, "deploy", "onnx_model")) == 2  # short's, then longer's
        assert len(partitions_materialized(port, "deploy", "leaderboard")) == 2  # one ranking for the change

        # One experiment's entry changed: experiments_sensor retrains that partition alone, and it is evaluated.
        set_experiments(fork, [short | {"overrides": tiny["overrides"] | {"max_iters": 280}}, longer, worse])
        reload_model_location(port)
        wait_for(
            lambda: (
                partitions_materialized(port, "evaluate", "evaluation_report")[-1:] == ["short"]
                and len(partitions_materialized(port, "evaluate", "evaluation_report")) == 4
            ),
            420,
            "the changed experiment retrained and evaluated",
        )
        trained = partitions_materialized(port, "model", "trained_model")
        assert trained[0] == trained[-1] == "short" and sorted(trained[1:-1]) == ["longer", "worse"], trained
