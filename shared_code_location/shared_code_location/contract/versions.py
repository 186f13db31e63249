"""Data versions: what an asset's content is, and what Dagster recorded of a materialization.

On every materialization Dagster records the asset's code version, its data version, and the data version of each
input it read; `runtime/staleness.py` compares them to say what a re-run must rebuild.

By default Dagster derives a data version from the code version and the inputs' data versions, which is blind to
what a root asset read from disk and to run config. So assets that read files or take config (ETL, training) set
their data version to a hash of what they produce: a new corpus changes it, an unchanged one keeps it, and
nothing downstream turns stale for a re-run that produced the same bytes.

An asset that reads something Dagster cannot version before it runs (files in a folder) carries the
`EXTERNAL_INPUT_TAG`; it is always stale, since only running it can tell whether its input changed. Its content
data version then keeps everything downstream fresh when nothing did.
"""

import hashlib
import json
import warnings
from typing import Any

import dagster as dg

from shared_code_location.contract.storage_formats import StorageFormat, TensorBundle, encode
from shared_code_location.private_dagster import (
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    INPUT_EVENT_POINTER_TAG_PREFIX,
)

#: Tag of assets that read input from outside Dagster; its value (a tag value: letters, digits, `_-.`) says what.
EXTERNAL_INPUT_TAG = "ml_pipeline/external_input"
#: Materialization metadata of an asset that reads every partition of an input: the partitions it read. Dagster
#: records no such thing, and a deleted partition (a removed input file) writes nothing that says the asset is behind.
INPUT_PARTITIONS_METADATA_KEY = "input_partitions"


def content_version(fmt: StorageFormat, value: Any) -> dg.DataVersion:
    """A data version that is the sha256 of `value` as stored in `fmt`; for a `TensorBundle`, of its tensors and
    model config only, so that timings in its header do not make identical weights look new."""
    if isinstance(value, TensorBundle):
        digest = hashlib.sha256(json.dumps(value.metadata.get("config"), sort_keys=True).encode())
        for name in sorted(value.tensors):
            array = value.tensors[name]
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return dg.DataVersion(digest.hexdigest())
    return dg.DataVersion(hashlib.sha256(encode(fmt, value)).hexdigest())


def versioned_output(value: Any, fmt: StorageFormat, output_name: str = "result", **kwargs: Any) -> dg.Output:
    """`value` as an `Output` whose data version is its `content_version`."""
    with warnings.catch_warnings():
        # `data_version` is marked beta; Dagster is pinned exactly, and the tests cover what we rely on.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(value, output_name=output_name, data_version=content_version(fmt, value), **kwargs)


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The latest materialization record of `key`, of one partition when `partition` is given."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    ).records
    return records[0] if records else None


def input_data_version(
    instance: dg.DagsterInstance, record: dg.EventLogRecord, parent: dg.AssetKey, parent_partition: str | None = None
) -> str | None:
    """The data version of `parent` that the materialization in `record` read. Dagster points at the parent's
    materialization it read; the data version is taken from there, since for a partitioned parent the recorded
    `input_data_version` tag is not the partition's own data version. For a partitioned parent that pointer is the
    parent's latest materialization of *any* partition when the input was read, so the partition read
    (`parent_partition`; by default the record's own, as experiments map one to one) is looked up as its latest
    materialization up to that point: another experiment trained just before must not pass for this one's model."""
    tags = record.asset_materialization.tags or {}
    pointer = tags.get(INPUT_EVENT_POINTER_TAG_PREFIX + parent.to_user_string())
    if pointer is None or not pointer.isdigit():  # "NULL": the input had no materialization when it was read
        return tags.get(INPUT_DATA_VERSION_TAG_PREFIX + parent.to_user_string())
    read = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=parent, storage_ids=[int(pointer)]), limit=1
    ).records
    partition = parent_partition if parent_partition is not None else record.partition_key
    if read and read[0].partition_key is not None and partition is not None and read[0].partition_key != partition:
        read = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, asset_partitions=[partition], before_storage_id=int(pointer)),
            limit=1,
        ).records
    return data_version(read[0] if read else None)


def data_version(record: dg.EventLogRecord | None) -> str | None:
    """The data version a materialization record carries, or None (no record, or none recorded)."""
    materialization = record.asset_materialization if record is not None else None
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization is not None else None
