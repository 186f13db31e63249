"""The workspace as a user runs it: every location loads from its own venv into one lineage graph."""

import os
import subprocess

import pytest

from conftest import ROOT, dagster_dev, graphql, location_statuses, run_cli

LOCATIONS = ["1_etl", "2_model", "3_evaluate", "4_deploy"]


def test_dev_loads_all_locations_into_one_graph(isolated_env):
    with dagster_dev(isolated_env) as port:
        assert location_statuses(port) == {name: ("LOADED", "RepositoryLocation") for name in LOCATIONS}
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
