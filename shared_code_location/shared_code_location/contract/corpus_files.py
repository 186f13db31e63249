"""Corpus files: the ETL's per-file assets have one partition per file of the input folder.

The partitions are *dynamic* (`CORPUS_FILES`, kept in the Dagster instance), named after the files. The input sensor
(in the daemon) and `cli.py run` keep them equal to the folder: a new file adds its partition, a removed one
deletes it. Each partition's materialization records the fingerprint of the file it read (`fingerprint`: its size
and modification time), so a changed file is a stale partition, told from the instance alone: the sensor and the
CLI agree on what is left to do, and each change is acted on once. Reading the folder costs one listing, never a
read of the files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

from shared_code_location.contract.versions import latest_materialization
from shared_code_location.private_dagster import INVALID_PARTITION_KEY_SUBSTRINGS

if TYPE_CHECKING:
    from shared_code_location.contract.resources import InputFilesResource

#: The partitions of the ETL's per-file assets: one per input file, named after it.
CORPUS_FILES = dg.DynamicPartitionsDefinition(name="corpus_files")
#: Materialization metadata of a file's partition: the fingerprint of the file it read.
SOURCE_FINGERPRINT_METADATA_KEY = "source_fingerprint"
#: The resource of a location whose assets are partitioned by `CORPUS_FILES`: the folder the files are in.
INPUT_FILES_RESOURCE_KEY = "input_files"


class CorpusFileNameError(ValueError):
    """An input file whose name cannot be a partition key: the message names it and what to change."""


def folder_files(input_files: InputFilesResource, required: bool = False) -> dict[str, str]:
    """`{file name: fingerprint}` of every matching file of the folder (local or object storage), in name order.
    The fingerprint is `"<size>:<mtime in ns>"`. A missing folder has no files; with `required`, a missing or empty
    folder raises `FileNotFoundError` naming it."""
    from shared_code_location.contract.storage import storage_errors

    folder = input_files.path
    if required:
        paths = input_files.list_files()
    else:
        with storage_errors(folder):
            paths = [p for p in folder.glob(input_files.pattern) if p.is_file()] if folder.is_dir() else []
    with storage_errors(folder):
        stats = {path.name: path.stat() for path in paths}
    for name in stats:
        found = [bad for bad in INVALID_PARTITION_KEY_SUBSTRINGS if bad in name]
        if found:
            raise CorpusFileNameError(
                f"input file {folder / name}: a partition cannot be named with {found!r} (Dagster reserves them); "
                "rename the file"
            )
    return {name: fingerprint(stat) for name, stat in sorted(stats.items())}


def fingerprint(stat: os.stat_result) -> str:
    """What says a file changed, from its `stat` alone: `"<size>:<modification time in ns>"`."""
    return f"{stat.st_size}:{int(stat.st_mtime * 1e9)}"


def location_files(defs: dg.Definitions) -> dict[str, str] | None:
    """`folder_files` of the input folder of a location whose assets are partitioned by `CORPUS_FILES` (through its
    `input_files` resource, as a run would bind it), which must hold files; None for the other locations."""
    graph = defs.resolve_asset_graph()
    if not any(graph.get(key).partitions_def == CORPUS_FILES for key in graph.materializable_asset_keys):
        return None
    resource = (defs.resources or {}).get(INPUT_FILES_RESOURCE_KEY)
    if resource is None:
        raise KeyError(f"assets partitioned by {CORPUS_FILES.name} need a {INPUT_FILES_RESOURCE_KEY!r} resource")
    with dg.build_resources({INPUT_FILES_RESOURCE_KEY: resource}) as resources:
        return folder_files(getattr(resources, INPUT_FILES_RESOURCE_KEY), required=True)


def recorded_source(record: dg.EventLogRecord | None) -> str | None:
    """The fingerprint of the file a partition's materialization read, or None."""
    materialization = record.asset_materialization if record else None
    value = (materialization.metadata if materialization else {}).get(SOURCE_FINGERPRINT_METADATA_KEY)
    return getattr(value, "value", value)


def stale_files(instance: dg.DagsterInstance, key: dg.AssetKey, files: Mapping[str, str]) -> list[str]:
    """The files whose partition of `key` was never materialized, or was materialized from another version of the
    file (another fingerprint)."""
    return [name for name, now in files.items() if recorded_source(latest_materialization(instance, key, name)) != now]
