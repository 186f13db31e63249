"""One pin list (pins.txt): every pyproject and requirements file writes its versions, and a file that strays is
named; the images and the bootstrap take uv's version from it."""

import shutil

from conftest import ROOT
from pipeline_cli import pins
from pipeline_cli.bootstrap import UV_VERSION


def test_every_file_pins_what_the_list_says():
    assert pins.mismatches() == []
    listed = pins.read_pins()
    assert {"dagster", "torch", "uv", "s3fs", "ray"} <= set(listed)
    pinned = {pins.normalized(name) for path in pins.pinned_files() for name, _, _ in pins.file_pins(path)}
    assert pinned == set(listed)  # nothing listed that no file pins


def test_a_pin_that_strays_from_the_list_is_named(tmp_path, monkeypatch):
    stray = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "shared_code_location" / "pyproject.toml", stray)
    stray.write_text(stray.read_text().replace(f"dagster=={pins.read_pins()['dagster']}", "dagster==1.0.0"))
    monkeypatch.setattr(pins, "pinned_files", lambda: [stray])
    monkeypatch.setattr(pins, "ROOT", tmp_path)
    assert pins.mismatches() == ["pyproject.toml: dagster==1.0.0, but pins.txt says " + pins.read_pins()["dagster"]]


def test_uv_comes_from_the_list():
    assert pins.read_pins()["uv"] == UV_VERSION
    dockerfile = (ROOT / "1_etl_code_location" / "Dockerfile").read_text()
    assert f"ghcr.io/astral-sh/uv:{UV_VERSION} " in dockerfile
