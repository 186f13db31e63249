"""The locations are declared once (dg.toml and each project's pyproject.toml); every other list agrees with it."""

import tomllib

import pytest
import yaml

from conftest import ROOT, run_cli
from pipeline_cli import derived_files
from pipeline_cli.locations import LOCATIONS, LocationError, check_stem, names_for, pattern_problems


def test_files_derived_from_dg_toml_are_up_to_date():
    assert derived_files.out_of_date(LOCATIONS) == [], "run `python scripts/cli.py locations --sync`"


def test_every_location_follows_the_naming_pattern_and_its_package_exists():
    assert pattern_problems(LOCATIONS) == []
    for number, env in enumerate(LOCATIONS, 1):
        names = names_for(number, env.stem)
        pyproject = tomllib.loads((env.path / "pyproject.toml").read_text())
        assert pyproject["project"]["name"] == names["distribution"]
        assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == [f"{env.package}*"]
        assert (env.path / env.package / "definitions.py").is_file()


def test_workspace_dagster_cloud_and_cli_list_the_same_locations_in_order():
    expected = [(env.name, env.module) for env in LOCATIONS]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert [(e["python_module"]["location_name"], e["python_module"]["module_name"]) for e in workspace] == expected
    cloud = yaml.safe_load((ROOT / "dagster_cloud.yaml").read_text())["locations"]
    assert [(e["location_name"], e["code_source"]["module_name"]) for e in cloud] == expected
    listed = run_cli("locations", "--check")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [name for name, _ in expected]


@pytest.mark.parametrize(
    ("stem", "message"),
    [
        ("5monitoring", "starts with a digit"),
        ("2_model", "starts with a digit"),
        ("class", "reserved word"),
        ("match", "reserved word"),
        ("shared", "reserved word"),
        ("Monitoring", "not a valid name"),
        ("feature-store", "not a valid name"),
        ("model", "clashes with location 2_model"),
        ("", "needs a name"),
        ("monitoring_code_location", "leave out `_code_location`"),
    ],
)
def test_bad_location_names_are_refused_with_the_reason(stem, message):
    with pytest.raises(LocationError, match=message):
        check_stem(stem, LOCATIONS)
