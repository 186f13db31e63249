"""The Dagster instance folder, where the CLI's logs go, and the environment every Dagster process it starts gets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from pipeline_cli.bootstrap import ROOT
from shared_code_location import settings

#: The tracked instance settings (run queue, pools) that an instance elsewhere starts from.
TRACKED_DAGSTER_YAML = ROOT / "example_persistent_home" / "dagster.yaml"
#: The folder of an instance where the CLI writes its logs (`run`'s, and each process of `dev` and `up`). Not
#: `logs/`: Dagster's webserver and daemon hand `$DAGSTER_HOME/logs/` to their telemetry upload (they rename it
#: `.logs_queue/` and POST each file), whatever dagster.yaml says (docs/settings.md).
LOG_FOLDER = "pipeline_logs"


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


def log_folder(home: Path | None = None) -> Path:
    """Where the CLI's logs for the instance in `home` (default: `dagster_home()`) go: `<home>/pipeline_logs/`."""
    return (home or dagster_home()) / LOG_FOLDER


#: Dagster's switch for the telemetry upload thread of the webserver and daemon: set (to anything), the thread
#: does nothing. `telemetry: enabled: false` in dagster.yaml stops Dagster's own telemetry log, not that thread.
DISABLE_UPLOAD_VARIABLE = "DAGSTER_DISABLE_TELEMETRY"


def telemetry_env(home: Path) -> dict[str, str]:
    """`DAGSTER_DISABLE_TELEMETRY=1` when the instance in `home` turns telemetry off (`telemetry: enabled: false`,
    as the project's dagster.yaml does), so that the webserver's and daemon's upload thread obeys it too."""
    config = (
        yaml.safe_load((home / "dagster.yaml").read_text(encoding="utf-8")) if (home / "dagster.yaml").exists() else {}
    )
    enabled = ((config or {}).get("telemetry") or {}).get("enabled", True)
    return {} if enabled else {DISABLE_UPLOAD_VARIABLE: "1"}


def dagster_env() -> dict[str, str]:
    """The environment every Dagster process gets: the instance folder, the project root, and the telemetry
    upload off where the instance turns telemetry off."""
    home = ensure_dagster_home()
    return os.environ | {"DAGSTER_HOME": str(home), settings.PROJECT_ROOT.name: str(ROOT)} | telemetry_env(home)
