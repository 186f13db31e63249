"""Resources for the input and output folders; relative paths resolve against the project root, never the cwd."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from shared_code_location.project_paths import resolve_project_path


class InputFilesResource(dg.ConfigurableResource):
    """The folder of text files the ETL ingests: every file matching `pattern`, in name order."""

    folder: str = Field(
        default_factory=lambda: os.environ.get("ML_PIPELINE_INPUT_DIR", "example_input_files_resource"),
        description="Folder of the corpus; default `$ML_PIPELINE_INPUT_DIR`, else example_input_files_resource",
    )
    pattern: str = "*.txt"

    @property
    def path(self) -> Path:
        """The folder as an absolute path."""
        return resolve_project_path(self.folder)

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
    """The folder releases are written to (created on first use); default `$ML_PIPELINE_OUTPUT_DIR`, else
    `example_output_resources`."""

    folder: str = Field(default_factory=lambda: os.environ.get("ML_PIPELINE_OUTPUT_DIR", "example_output_resources"))

    @property
    def path(self) -> Path:
        """The folder as an absolute path, created if missing."""
        folder = resolve_project_path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
