"""Data versions and staleness: when an asset is up to date, and which assets a re-run must rebuild.

On every materialization Dagster records the asset's code version, its data version, and the data version of each
input it read. An asset is stale when it was never materialized, when its code version changed since, or when an
input's current data version differs from the one it read. That is what the UI shows, and what `stale_assets`
computes for `cli.py run`, so that a re-run with unchanged code and data skips training.

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
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg

from shared_code_location.private_dagster import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INPUT_DATA_VERSION_TAG_PREFIX,
    INPUT_EVENT_POINTER_TAG_PREFIX,
)
from shared_code_location.storage_formats import StorageFormat, TensorBundle, encode

#: Tag of assets that read input from outside Dagster; its value (a tag value: letters, digits, `_-.`) says what.
EXTERNAL_INPUT_TAG = "ml_pipeline/external_input"


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


class Target(NamedTuple):
    """One thing a run can materialize: an asset, or one partition of a partitioned asset."""

    key: dg.AssetKey
    partition: str | None = None

    def __str__(self) -> str:
        return self.key.to_user_string() + (f"[{self.partition}]" if self.partition is not None else "")


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The latest materialization record of `key`, of one partition when `partition` is given."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    ).records
    return records[0] if records else None


def stale_assets(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    partitions: Sequence[str] | None = None,
) -> dict[Target, str]:
    """What of `defs` a run must rebuild (each asset, or each partition of a partitioned asset, restricted to
    `partitions` when given), each with the reason, in dependency order.

    Reasons: reads input from outside Dagster (`EXTERNAL_INPUT_TAG`); never materialized; code version changed;
    an upstream asset in `defs` is rebuilt; an input has a new data version since it was read; the experiment's
    declaration changed since its partition was trained; or `run_config` gives one of the asset's ops a config
    other than the one its last materialization ran with (a run launched without config counts as `{}`).
    """
    from shared_code_location.experiments import DECLARED_METADATA_KEY, recorded_fingerprint

    graph = defs.resolve_asset_graph()
    local = set(graph.materializable_asset_keys)
    requested_ops = dict((run_config or {}).get("ops", {}))
    stale: dict[Target, str] = {}
    for key in (key for key in graph.toposorted_asset_keys if key in local):
        node = graph.get(key)
        targets: list[str | None] = [None]
        if node.partitions_def is not None:
            targets = list(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
            targets = [p for p in targets if partitions is None or p in partitions]
        declared = (node.metadata or {}).get(DECLARED_METADATA_KEY)
        declared = getattr(declared, "value", declared) or {}
        for partition in targets:
            target = Target(key, partition)
            if source := node.tags.get(EXTERNAL_INPUT_TAG):
                stale[target] = f"reads from outside Dagster ({source}): only a run can tell whether it changed"
                continue
            record = latest_materialization(instance, key, partition)
            if record is None:
                stale[target] = "never materialized"
                continue
            code_version = node.code_version
            recorded_code = (record.asset_materialization.tags or {}).get(CODE_VERSION_TAG)
            if code_version is not None and recorded_code != code_version:
                stale[target] = f"code version {recorded_code} -> {code_version}"
                continue
            parents = sorted(node.parent_keys, key=str)
            if rebuilt := [str(p.to_user_string()) for p in parents if _parent_stale(stale, graph, p, partition)]:
                stale[target] = f"upstream {', '.join(rebuilt)} is rebuilt"
                continue
            if changed := [
                p.to_user_string() for p in parents if _input_changed(instance, graph, p, partition, record)
            ]:
                stale[target] = f"new data in {', '.join(changed)}"
                continue
            if partition in declared and recorded_fingerprint(record) not in (None, declared[partition]):
                stale[target] = f"experiment {partition} changed in its YAML since it was trained"
                continue
            op_names = [op.name for op in op_defs(defs, key)]
            if any(name in requested_ops for name in op_names):
                run = instance.get_run_by_id(record.run_id)
                previous = ((run.run_config if run else {}) or {}).get("ops", {})
                if any(previous.get(name, {}) != requested_ops.get(name, {}) for name in op_names):
                    stale[target] = "run config differs from the last materialization's"
    return stale


def _parent_partitions(graph: Any, parent: dg.AssetKey, partition: str | None) -> list[str | None] | None:
    """The partitions of `parent` a target reads: the same one, every one (None), or the parent whole ([None])."""
    if graph.get(parent).partitions_def is None:
        return [None]
    return [partition] if partition is not None else None


def _parent_stale(stale: Mapping[Target, str], graph: Any, parent: dg.AssetKey, partition: str | None) -> bool:
    read = _parent_partitions(graph, parent, partition)
    return any(t.key == parent and (read is None or t.partition in read) for t in stale)


def _input_changed(
    instance: dg.DagsterInstance, graph: Any, parent: dg.AssetKey, partition: str | None, record: dg.EventLogRecord
) -> bool:
    read = _parent_partitions(graph, parent, partition)
    if read is None:  # an unpartitioned asset reading every partition: any partition written since it last ran
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, after_storage_id=record.storage_id), limit=1
        ).records
        return bool(records)
    recorded = input_data_version(instance, record, parent)
    current = data_version(latest_materialization(instance, parent, read[0]))
    return current is not None and recorded != current


def input_data_version(instance: dg.DagsterInstance, record: dg.EventLogRecord, parent: dg.AssetKey) -> str | None:
    """The data version of `parent` that the materialization in `record` read. Dagster points at the parent's
    materialization it read; the data version is taken from there, since for a partitioned parent the recorded
    `input_data_version` tag is not the partition's own data version."""
    tags = record.asset_materialization.tags or {}
    pointer = tags.get(INPUT_EVENT_POINTER_TAG_PREFIX + parent.to_user_string())
    if pointer is None:
        return tags.get(INPUT_DATA_VERSION_TAG_PREFIX + parent.to_user_string())
    read = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=parent, storage_ids=[int(pointer)]), limit=1
    ).records
    return data_version(read[0] if read else None)


def data_version(record: dg.EventLogRecord | None) -> str | None:
    """The data version a materialization record carries, or None (no record, or none recorded)."""
    materialization = record.asset_materialization if record is not None else None
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization is not None else None


def op_defs(defs: dg.Definitions, key: dg.AssetKey) -> list[dg.OpDefinition]:
    """The ops that compute `key`: one for an `@asset`, several for a graph-backed asset."""
    node = defs.resolve_assets_def(key).node_def
    return list(node.iterate_op_defs()) if isinstance(node, dg.GraphDefinition) else [node]
