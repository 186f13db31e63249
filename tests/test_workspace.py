"""The workspace as a user runs it: each location loads from its own venv; dg and Dagster+ tooling accept it."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from pipeline_cli.locations import LOCATIONS


@pytest.mark.parametrize("env", LOCATIONS, ids=lambda env: env.name)
def test_definitions_validate_in_each_venv(env, isolated_env):
    dagster_env = isolated_env | {"DAGSTER_HOME": isolated_env["ML_PIPELINE_DAGSTER_HOME"]}
    os.makedirs(dagster_env["DAGSTER_HOME"], exist_ok=True)
    command = [str(env.venv / "bin" / "dagster"), "definitions", "validate", "-m", env.module]
    result = subprocess.run(command, cwd=env.path, env=dagster_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("env", LOCATIONS, ids=lambda env: env.name)
def test_dg_commands_a_user_types_in_a_location_work(env):
    """`dg list defs` imports the project's code, so it runs from the project's venv (README)."""
    dg = str(env.venv / "bin" / "dg")
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=env.path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assets = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert assets, listed.stdout[:500]
    for args in (["check", "yaml"], ["list", "components"]):
        result = subprocess.run([dg, *args], cwd=env.path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (args, result.stderr[-2000:])


def test_adding_an_asset_is_adding_a_file_in_defs(tmp_path):
    """`dg scaffold defs` in a copy of the ETL location: the new file's asset is loaded with the rest."""
    etl = next(env for env in LOCATIONS if env.name == "1_etl")
    copy = tmp_path / etl.folder
    shutil.copytree(etl.path, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__", "*.egg-info"))
    (copy / ".venv").symlink_to(etl.venv)
    dg = str(etl.venv / "bin" / "dg")
    scaffolded = subprocess.run([dg, "scaffold", "defs", "dagster.asset", "corpus_report.py"], cwd=copy,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    assert scaffolded.returncode == 0, scaffolded.stderr[-2000:]
    assert (copy / etl.package / "defs" / "corpus_report.py").is_file()
    listed = subprocess.run([dg, "list", "defs", "--json"], cwd=copy, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "corpus_report" in {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}


def test_the_model_location_registers_its_experiments_component():
    model = next(env for env in LOCATIONS if env.name == "2_model")
    listed = subprocess.run([str(model.venv / "bin" / "dg"), "list", "components"], cwd=model.path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "model_code_location.experiments.Experiments" in listed.stdout, listed.stdout[-2000:]


def test_dg_check_defs_uses_each_project_venv():
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dg"), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


@pytest.mark.parametrize("name", ["dagster_cloud.yaml", "build.yaml"])
def test_dagster_plus_files_pass_dagster_cloud_ci_check(name):
    command = [str(ROOT / ".venv" / "bin" / "dagster-cloud"), "ci", "check", "--project-dir", ".",
               "--dagster-cloud-yaml-path", name, "--dagster-cloud-yaml-check", "error",
               "--dagster-cloud-connect-check", "skip"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
