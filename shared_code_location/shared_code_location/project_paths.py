"""Where the project lives, resolved the same from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT_ENV_VAR = "ML_PIPELINE_PROJECT_ROOT"
# A file that exists only at the root of this repository (and of its forks).
_ROOT_MARKER = "dagster_cloud.yaml"


def project_root() -> Path:
    """The repository root: `$ML_PIPELINE_PROJECT_ROOT` if set, else the nearest parent holding `dagster_cloud.yaml`.

    The package is installed editable from the repository, so walking up from this file finds the root no matter
    which directory a process was started in.
    """
    configured = os.environ.get(PROJECT_ROOT_ENV_VAR)
    if configured:
        return Path(configured).expanduser().resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / _ROOT_MARKER).is_file():
            return parent
    raise RuntimeError(
        f"Cannot find the project root above {__file__}: no {_ROOT_MARKER} in any parent. "
        f"Set {PROJECT_ROOT_ENV_VAR} to the repository root."
    )


def resolve_project_path(path: str | os.PathLike[str]) -> Path:
    """An absolute path: `path` itself if absolute (after `~` expansion), else relative to the project root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_root() / candidate


def default_storage_uri() -> str:
    """Where the IO manager keeps cross-location data: `$ML_PIPELINE_STORAGE_URI` (s3://, gs://, ...) or local.

    Not `example_persistent_home/storage`: Dagster keeps its compute logs there.
    """
    return os.environ.get("ML_PIPELINE_STORAGE_URI") or str(
        project_root() / "example_persistent_home" / "asset_storage"
    )
