"""Experiments with a running daemon (`cli.py dev`, in a fork of this checkout whose experiments YAML the test
edits as a user would): adding an experiment trains that one and nothing else (the better one on two workers, so on
a Ray cluster the run starts for itself); the release moves to it only when it is better; one whose gate fails never
wins; changing one experiment retrains that one alone."""

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

        # A better experiment added to the YAML, on two workers: it alone trains, on Ray, and the release moves to
        # it: the leaderboard ranks it beside the one-process experiment.
        set_experiments(
            fork,
            [
                {"name": "short", **tiny, "overrides": tiny["overrides"] | {"max_iters": 260}},
                {"name": "longer", **tiny, "workers": 2, "overrides": tiny["overrides"] | {"max_iters": 600}},
            ],
        )
        reload_model_location(port)
        wait_for(lambda: released_experiment(latest) == "longer", 600, "the release of the better experiment")
        entries = graphql(port, METADATA, {"path": ["model", "trained_model"], "partition": "longer"})
        metadata = {e["label"]: e.get("intValue", e.get("text")) for e in
                    entries["assetOrError"]["assetMaterializations"][0]["metadataEntries"]}  # fmt: skip
        assert metadata["workers"] == 2 and metadata["ray_job_id"].startswith("pipes-"), metadata
        card = json.loads((latest.parent / json.loads(latest.read_text())["path"] / "model_card.json").read_text())
        assert sorted(row["experiment"] for row in card["experiment"]["leaderboard"]) == ["longer", "short"]
        assert partitions_materialized(port, "model", "trained_model") == ["short", "longer"]
        assert partitions_materialized(port, "evaluate", "evaluation_report") == ["short", "longer"]
        second = json.loads(latest.read_text())["version"]
        assert second != first

        # A worse one, too short to beat the bigram baseline: it alone trains and is ranked, its failed gate keeps
        # it out, and the release stays where it is.
        set_experiments(
            fork,
            [
                {"name": "short", **tiny, "overrides": tiny["overrides"] | {"max_iters": 260}},
                {"name": "longer", **tiny, "workers": 2, "overrides": tiny["overrides"] | {"max_iters": 600}},
                {"name": "worse", **tiny, "overrides": tiny["overrides"] | {"max_iters": 30}},
            ],
        )
        reload_model_location(port)
        boards = len(partitions_materialized(port, "deploy", "leaderboard"))
        wait_for(lambda: len(partitions_materialized(port, "deploy", "leaderboard")) > boards, 420, "a new leaderboard")
        assert partitions_materialized(port, "model", "trained_model") == ["short", "longer", "worse"]
        time.sleep(40)  # two automation ticks: nothing downstream of the unchanged winner runs
        assert json.loads(latest.read_text())["version"] == second
        assert len(partitions_materialized(port, "deploy", "onnx_model")) == 2

        # One experiment's entry changed: experiments_sensor retrains that partition alone, and it is evaluated.
        set_experiments(
            fork,
            [
                {"name": "short", **tiny, "overrides": tiny["overrides"] | {"max_iters": 280}},
                {"name": "longer", **tiny, "workers": 2, "overrides": tiny["overrides"] | {"max_iters": 600}},
                {"name": "worse", **tiny, "overrides": tiny["overrides"] | {"max_iters": 30}},
            ],
        )
        reload_model_location(port)
        wait_for(
            lambda: (
                partitions_materialized(port, "evaluate", "evaluation_report")[-1:] == ["short"]
                and len(partitions_materialized(port, "evaluate", "evaluation_report")) == 4
            ),
            420,
            "the changed experiment retrained and evaluated",
        )
        assert partitions_materialized(port, "model", "trained_model") == ["short", "longer", "worse", "short"]
