"""Every `ML_PIPELINE_*` setting is declared once, in settings.py, and read nowhere else."""

import re
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from shared_code_location import settings
from shared_code_location.contract.resources import pipeline_resources

ROOT = settings.project_root()
_NAME = re.compile(r"\bML_PIPELINE_[A-Z_]+\b")


def _project_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / p for p in listing.stdout.splitlines() if p.endswith((".py", ".md", ".yaml", ".toml", "Dockerfile"))]


def test_every_setting_the_project_names_is_declared_in_settings():
    declared = {setting.name for setting in settings.SETTINGS}
    used = {name for path in _project_files() if path.is_file() for name in _NAME.findall(path.read_text())}
    assert used <= declared, f"not in settings.py: {sorted(used - declared)}"


def test_only_settings_reads_them_from_the_environment():
    reads = re.compile(r"(os\.environ(\.get)?[\[(]|os\.getenv\()\s*[\"']ML_PIPELINE_")
    offenders = [
        str(path.relative_to(ROOT))
        for path in _project_files()
        if path.suffix == ".py" and path.is_file() and reads.search(path.read_text())
    ]
    assert offenders == []


def test_the_settings_page_documents_every_setting_with_its_default():
    page = (ROOT / "docs" / "settings.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `ML_PIPELINE_")]
    assert [row.split("`")[1] for row in rows] == [setting.name for setting in settings.SETTINGS]  # all, in order
    for setting, row in zip(settings.SETTINGS, rows, strict=True):
        assert (setting.default or "—") in row and setting.description[:40] in row, row


def test_relative_settings_resolve_against_the_project_root_and_uris_stay_uris(monkeypatch):
    monkeypatch.setenv(settings.STORAGE_URI.name, "s3://bucket/prefix")
    assert settings.storage_uri() == "s3://bucket/prefix"
    monkeypatch.setenv(settings.STORAGE_URI.name, "relative/storage")
    assert settings.storage_uri() == str(ROOT / "relative" / "storage")
    monkeypatch.setenv(settings.OUTPUT_DIR.name, "")  # empty counts as unset
    assert settings.OUTPUT_DIR.path() == ROOT / "example_output_resources"


def test_production_takes_storage_and_folders_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.DEPLOYMENT.name, "production")
    resources = pipeline_resources("input_files", "output_folder")
    assert isinstance(resources["io_manager"].base_uri, dg.EnvVar)
    assert isinstance(resources["output_folder"].folder, dg.EnvVar)

    @dg.asset
    def value() -> dict:
        return {"a": 1}

    monkeypatch.delenv(settings.STORAGE_URI.name, raising=False)
    with pytest.raises(Exception, match="ML_PIPELINE_STORAGE_URI"):
        dg.materialize([value], resources=pipeline_resources())
    monkeypatch.setenv(settings.STORAGE_URI.name, str(tmp_path))
    assert dg.materialize([value], resources=pipeline_resources()).success
    assert (tmp_path / "value.json").exists()


def test_an_unknown_deployment_is_named(monkeypatch):
    monkeypatch.setenv(settings.DEPLOYMENT.name, "staging")
    with pytest.raises(ValueError, match="ML_PIPELINE_DEPLOYMENT='staging' is not a deployment; choose one of local"):
        pipeline_resources()
