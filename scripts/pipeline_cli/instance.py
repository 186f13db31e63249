"""The Dagster instance folder, and the environment every Dagster process the CLI starts gets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline_cli.bootstrap import ROOT
from shared_code_location import settings

#: The tracked instance settings (run queue, pools) that an instance elsewhere starts from.
TRACKED_DAGSTER_YAML = ROOT / "example_persistent_home" / "dagster.yaml"


def dagster_home() -> Path:
    """`$ML_PIPELINE_DAGSTER_HOME` (tests point it at a temporary folder), else example_persistent_home/."""
    return settings.DAGSTER_HOME.path()


def ensure_dagster_home() -> Path:
    """The instance folder, with its dagster.yaml."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        # An instance elsewhere gets the same settings: run queue, pool limits.
        shutil.copyfile(TRACKED_DAGSTER_YAML, home / "dagster.yaml")
    return home


def dagster_env() -> dict[str, str]:
    """The environment every Dagster process gets: the instance folder and the project root."""
    return os.environ | {"DAGSTER_HOME": str(ensure_dagster_home()), settings.PROJECT_ROOT.name: str(ROOT)}
