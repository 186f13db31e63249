"""Resources every location binds, chosen per deployment as Dagster's own examples do.

`local` (the default) uses the folders and storage that `settings.py` names, relative to the project root.
`production` takes them from the environment with `dg.EnvVar`: the UI shows which variable each comes from (never
its value), and a run whose variable is missing fails with its name instead of writing to a folder inside one
container that no other location can see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from shared_code_location import settings
from shared_code_location.asset_keys import IO_MANAGER_KEY
from shared_code_location.io_manager import PipelineIOManager


class InputFilesResource(dg.ConfigurableResource):
    """The folder of text files the ETL ingests: every file matching `pattern`, in name order."""

    folder: str = Field(default_factory=settings.INPUT_DIR.get, description=settings.INPUT_DIR.description)
    pattern: str = "*.txt"

    @property
    def path(self) -> Path:
        """The folder as an absolute path."""
        return settings.resolve_project_path(self.folder)

    def list_files(self) -> list[Path]:
        """The matching files, sorted; raises with the folder's name if it is missing or holds none."""
        folder = self.path
        if not folder.is_dir():
            raise FileNotFoundError(f"input folder {folder} does not exist (InputFilesResource.folder={self.folder!r})")
        files = sorted(p for p in folder.glob(self.pattern) if p.is_file())
        if not files:
            raise FileNotFoundError(f"input folder {folder} holds no file matching {self.pattern!r}")
        return files


class OutputFolderResource(dg.ConfigurableResource):
    """The folder releases are written to (created on first use)."""

    folder: str = Field(default_factory=settings.OUTPUT_DIR.get, description=settings.OUTPUT_DIR.description)

    @property
    def path(self) -> Path:
        """The folder as an absolute path, created if missing."""
        folder = settings.resolve_project_path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _local() -> dict[str, Any]:
    return {
        IO_MANAGER_KEY: PipelineIOManager(),
        "input_files": InputFilesResource(),
        "output_folder": OutputFolderResource(),
    }


def _production() -> dict[str, Any]:
    return {
        IO_MANAGER_KEY: PipelineIOManager(base_uri=dg.EnvVar(settings.STORAGE_URI.name)),
        "input_files": InputFilesResource(folder=dg.EnvVar(settings.INPUT_DIR.name)),
        "output_folder": OutputFolderResource(folder=dg.EnvVar(settings.OUTPUT_DIR.name)),
    }


RESOURCES_BY_DEPLOYMENT = {"local": _local, "production": _production}


def pipeline_resources(*names: str) -> dict[str, Any]:
    """The IO manager plus the named resources (`input_files`, `output_folder`) for `$ML_PIPELINE_DEPLOYMENT`."""
    deployment = settings.DEPLOYMENT.get() or "local"
    if deployment not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(
            f"{settings.DEPLOYMENT.name}={deployment!r} is not a deployment; choose one of "
            f"{', '.join(RESOURCES_BY_DEPLOYMENT)}"
        )
    resources = RESOURCES_BY_DEPLOYMENT[deployment]()
    unknown = set(names) - set(resources)
    if unknown:
        raise KeyError(f"no resource named {sorted(unknown)}; there are {sorted(resources)}")
    return {key: resources[key] for key in (IO_MANAGER_KEY, *names)}
