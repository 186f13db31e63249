"""Resources every location binds, chosen per deployment as Dagster's own examples do.

`local` (the default) uses the folders and storage that `settings.py` names, relative to the project root.
`production` takes them from the environment with `dg.EnvVar`: the UI shows which variable each comes from (never
its value), and a run whose variable is missing fails with its name instead of writing to a folder inside one
container that no other location can see. In both, the object store's endpoint, credentials and region
(`ObjectStore`) are bound with `dg.EnvVar` where their variables are set, so no secret shows in the UI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from shared_code_location import settings
from shared_code_location.contract.asset_keys import IO_MANAGER_KEY
from shared_code_location.contract.io_manager import ObjectStore, PipelineIOManager

if TYPE_CHECKING:
    from upath import UPath


class InputFilesResource(dg.ConfigurableResource):
    """The text files the ETL ingests: every file matching `pattern` in `folder` (a local folder, or a prefix in
    object storage such as s3://bucket/input), in name order."""

    folder: str = Field(default_factory=settings.INPUT_DIR.get, description=settings.INPUT_DIR.description)
    pattern: str = "*.txt"
    object_store: ObjectStore = Field(default_factory=ObjectStore, description="How s3:// URIs are reached.")

    @property
    def path(self) -> UPath:
        """The folder as an absolute path, or its object-storage URI."""
        return self.object_store.path(self.folder)

    def list_files(self) -> list[UPath]:
        """The matching files, sorted; raises with the folder's name if it is missing or holds none."""
        from shared_code_location.contract.storage import storage_errors

        folder = self.path
        with storage_errors(folder):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"input folder {folder} does not exist (InputFilesResource.folder={self.folder!r})"
                )
            files = sorted((p for p in folder.glob(self.pattern) if p.is_file()), key=lambda p: p.name)
        if not files:
            raise FileNotFoundError(f"input folder {folder} holds no file matching {self.pattern!r}")
        return files


class OutputFolderResource(dg.ConfigurableResource):
    """Where releases are written: a folder (created on first use) or object storage (s3://bucket/releases)."""

    folder: str = Field(default_factory=settings.OUTPUT_DIR.get, description=settings.OUTPUT_DIR.description)
    object_store: ObjectStore = Field(default_factory=ObjectStore, description="How s3:// URIs are reached.")

    @property
    def path(self) -> UPath:
        """The folder as an absolute path (a local one created if missing), or the object-storage URI."""
        from shared_code_location.contract.storage_formats import is_local

        folder = self.object_store.path(self.folder)
        if is_local(folder):  # object stores have no folders (and s3fs's mkdir would create a missing bucket)
            folder.mkdir(parents=True, exist_ok=True)
        return folder


def object_store() -> ObjectStore:
    """The object store's connection, each field bound to its variable with `dg.EnvVar` where that is set (never
    its value, so the UI shows no secret); unset fields leave it to the AWS configuration."""
    fields = {
        "endpoint_url": settings.S3_ENDPOINT_URL,
        "access_key_id": settings.S3_ACCESS_KEY_ID,
        "secret_access_key": settings.S3_SECRET_ACCESS_KEY,
        "region": settings.S3_REGION,
    }
    return ObjectStore(**{field: dg.EnvVar(s.name) for field, s in fields.items() if s.get()})


def _local() -> dict[str, Any]:
    store = object_store()
    return {
        IO_MANAGER_KEY: PipelineIOManager(object_store=store),
        "input_files": InputFilesResource(object_store=store),
        "output_folder": OutputFolderResource(object_store=store),
    }


def _production() -> dict[str, Any]:
    store = object_store()
    return {
        IO_MANAGER_KEY: PipelineIOManager(base_uri=dg.EnvVar(settings.STORAGE_URI.name), object_store=store),
        "input_files": InputFilesResource(folder=dg.EnvVar(settings.INPUT_DIR.name), object_store=store),
        "output_folder": OutputFolderResource(folder=dg.EnvVar(settings.OUTPUT_DIR.name), object_store=store),
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
