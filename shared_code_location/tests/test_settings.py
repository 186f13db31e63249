"""Every `ML_PIPELINE_*` setting is declared once, in settings.py, and read nowhere else."""

import re
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from shared_code_location import settings
from shared_code_location.contract.resources import pipeline_resources

ROOT = settings.project_root()
_NAME = re.compile(r"\bML_PIPELINE_[A-Z0-9_]*[A-Z0-9]\b")  # S3_REGION has a digit; S3_* is a family, not a name


def _project_files() -> list[Path]:
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    files = [
        ROOT / p for p in listing.stdout.splitlines() if p.endswith((".py", ".md", ".yaml", ".toml", "Dockerfile"))
    ]
    # Not an empty list that every check passes: the files that declare, document and read the settings are in it.
    assert {
        ROOT / "shared_code_location" / "shared_code_location" / "settings.py",
        ROOT / "docs" / "settings.md",
    } <= set(files)
    return files


def test_every_setting_the_project_names_is_declared_in_settings():
    declared = {setting.name for setting in settings.SETTINGS}
    used = {name for path in _project_files() if path.is_file() for name in _NAME.findall(path.read_text())}
    assert used <= declared, f"not in settings.py: {sorted(used - declared)}"
    assert declared <= used  # each is named somewhere (settings.py at least): the scan read the files


def test_only_settings_reads_them_from_the_environment():
    reads = re.compile(r"(os\.environ(\.get)?[\[(]|os\.getenv\()\s*[\"']ML_PIPELINE_")
    files = [path for path in _project_files() if path.suffix == ".py" and path.is_file()]
    offenders = [str(path.relative_to(ROOT)) for path in files if reads.search(path.read_text())]
    assert offenders == []
    # The pattern finds a read where there is one (settings.py reads them through a variable name).
    name = "ML_PIPELINE" + "_X"  # not written out, or this file would read as one
    assert reads.search(f"os.environ.get({name!r})") and reads.search(f"os.getenv({name!r})")


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
