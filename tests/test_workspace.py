"""The workspace as a user runs it: every location loads from its own venv into one lineage graph."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import CLI, ROOT, run_cli

LOCATIONS = ["1_etl", "2_model", "3_evaluate", "4_deploy"]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request, timeout=5))["data"]


def test_dev_loads_all_locations_into_one_graph(isolated_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "dev", "--port", str(port)],
        cwd=ROOT,
        env=isolated_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, statuses = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                entries = graphql(
                    port,
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename } } } } }",
                )["workspaceOrError"]["locationEntries"]
            except OSError:
                continue
            statuses = {e["name"]: (e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries}
            if statuses and all(s == "LOADED" for s, _ in statuses.values()):
                break
        assert statuses == {name: ("LOADED", "RepositoryLocation") for name in LOCATIONS}
        nodes = graphql(
            port,
            "{ assetNodes { assetKey { path } isMaterializable repository { location { name } } "
            "dependencyKeys { path } } }",
        )["assetNodes"]
        owner = {
            tuple(n["assetKey"]["path"]): n["repository"]["location"]["name"] for n in nodes if n["isMaterializable"]
        }
        edges = {
            (owner[tuple(d["path"])], owner[tuple(n["assetKey"]["path"])])
            for n in nodes
            if n["isMaterializable"]
            for d in n["dependencyKeys"]
            if owner.get(tuple(d["path"])) not in (None, owner[tuple(n["assetKey"]["path"])])
        }
        assert {("1_etl", "2_model"), ("2_model", "3_evaluate"), ("3_evaluate", "4_deploy")} <= edges
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("dev did not shut down within 30 s of Ctrl-C")


@pytest.mark.parametrize("location", LOCATIONS)
def test_definitions_validate_in_each_venv(location, isolated_env):
    folder = ROOT / f"{location}_code_location"
    package = {"1_etl": "etl", "2_model": "model", "3_evaluate": "evaluate", "4_deploy": "deploy"}[location]
    env = isolated_env | {"DAGSTER_HOME": isolated_env["ML_PIPELINE_DAGSTER_HOME"]}
    os.makedirs(env["DAGSTER_HOME"], exist_ok=True)
    result = subprocess.run(
        [
            str(folder / ".venv" / "bin" / "dagster"),
            "definitions",
            "validate",
            "-m",
            f"{package}_code_location.definitions",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_dg_check_defs_uses_each_project_venv():
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dg"), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_dagster_cloud_yaml_is_valid():
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "dagster-cloud"),
            "ci",
            "check",
            "--project-dir",
            ".",
            "--dagster-cloud-yaml-check",
            "error",
            "--dagster-cloud-connect-check",
            "skip",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_errors_are_clear():
    result = run_cli("run", "--only", "5_nowhere")
    assert result.returncode != 0 and "unknown location '5_nowhere'" in result.stderr
    result = run_cli("run", "--set", "no_equals_sign", "--only", "1_etl")
    assert result.returncode != 0 and "--set expects key=value" in result.stderr
    assert "setup" in run_cli("--help").stdout
