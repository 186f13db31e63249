import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "scripts" / "cli.py")]


@pytest.fixture
def isolated_env(tmp_path) -> dict[str, str]:
    """Environment that sends Dagster's instance, pipeline storage and releases to temporary folders."""
    return os.environ | {
        "ML_PIPELINE_DAGSTER_HOME": str(tmp_path / "home"),
        "ML_PIPELINE_STORAGE_URI": str(tmp_path / "storage"),
        "ML_PIPELINE_OUTPUT_DIR": str(tmp_path / "releases"),
    }


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
