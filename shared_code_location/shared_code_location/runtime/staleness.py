"""Staleness: which assets a re-run must rebuild, and why (what `cli.py run` skips, and what it prints).

An asset is stale when it was never materialized, when its code version changed since, when an input's current
data version differs from the one it read (`contract/versions.py`), when its experiment's declaration or its input
file changed, when a partition it read was removed, when a blocking check of it failed, or when the run asks its
ops for other config than its last materialization ran with. That is what the UI shows too,
so that a re-run with unchanged code, data and config trains nothing.
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg

from shared_code_location.contract.corpus_files import recorded_source
from shared_code_location.contract.experiments import DECLARED_METADATA_KEY, recorded_fingerprint
from shared_code_location.contract.versions import (
    EXTERNAL_INPUT_TAG,
    INPUT_PARTITIONS_METADATA_KEY,
    data_version,
    input_data_version,
    latest_materialization,
)
from shared_code_location.private_dagster import CODE_VERSION_TAG


class Target(NamedTuple):
    """One thing a run can materialize: an asset, or one partition of a partitioned asset."""

    key: dg.AssetKey
    partition: str | None = None

    def __str__(self) -> str:
        return self.key.to_user_string() + (f"[{self.partition}]" if self.partition is not None else "")


def stale_assets(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    partitions: Mapping[str, Sequence[str]] | None = None,
    sources: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[Target, str]:
    """What of `defs` a run must rebuild (each asset, or each partition of a partitioned asset), each with the
    reason, in dependency order. `partitions`: `{partitions name: keys}`, to restrict the assets partitioned so
    (`--experiment`); `sources`: `{partitions name: {key: fingerprint}}`, the current fingerprint of what each
    partition reads from outside Dagster (`corpus_files.folder_files`).

    Reasons: reads input from outside Dagster (`EXTERNAL_INPUT_TAG`); never materialized; code version changed;
    an upstream asset in `defs` is rebuilt; an input has a new data version since it was read, or a partition it
    read was removed; the experiment's declaration changed since its partition was trained; the input file of a
    partition changed since it was read; a blocking check of an unpartitioned asset failed at its last evaluation
    (a re-run must not take a failed gate as settled); or `run_config` gives one of the asset's ops a config other
    than the one its last materialization ran with (a run launched without config counts as `{}`).
    """
    graph = defs.resolve_asset_graph()
    local = set(graph.materializable_asset_keys)
    requested_ops = dict((run_config or {}).get("ops", {}))
    stale: dict[Target, str] = {}
    for key in (key for key in graph.toposorted_asset_keys if key in local):
        node = graph.get(key)
        targets: list[str | None] = [None]
        partitions_name = getattr(node.partitions_def, "name", None)
        if node.partitions_def is not None:
            targets = list(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
            only = (partitions or {}).get(partitions_name)
            targets = [p for p in targets if only is None or p in only]
        declared = (node.metadata or {}).get(DECLARED_METADATA_KEY)
        declared = getattr(declared, "value", declared) or {}
        read_from = (sources or {}).get(partitions_name) or {}
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
            if partition in read_from and recorded_source(record) != read_from[partition]:
                stale[target] = f"file {partition} changed since it was read"
                continue
            if partition is None and (failed := _failed_blocking_checks(graph, instance, key)):
                # Else the run after a failed gate would take the asset as settled and carry on downstream.
                stale[target] = f"blocking check {', '.join(failed)} did not pass"
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
    if read is None:  # an unpartitioned asset reading every partition: any partition written or removed since
        recorded = (record.asset_materialization.metadata or {}).get(INPUT_PARTITIONS_METADATA_KEY)
        recorded = getattr(recorded, "value", recorded)
        current = graph.get(parent).partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        if recorded is not None and set(recorded) != set(current):
            return True
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, after_storage_id=record.storage_id), limit=1
        ).records
        return bool(records)
    recorded = input_data_version(instance, record, parent)
    current = data_version(latest_materialization(instance, parent, read[0]))
    return current is not None and recorded != current


def _failed_blocking_checks(graph: Any, instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    """The blocking checks of `key` whose latest evaluation failed."""
    failed = []
    for check_key in sorted(graph.get_check_keys_for_assets({key}), key=lambda k: k.name):
        record = instance.get_latest_asset_check_evaluation_record(check_key)
        if graph.get_check_spec(check_key).blocking and record is not None and record.status.value == "FAILED":
            failed.append(check_key.name)
    return failed


def op_defs(defs: dg.Definitions, key: dg.AssetKey) -> list[dg.OpDefinition]:
    """The ops that compute `key`: one for an `@asset`, several for a graph-backed asset."""
    node = defs.resolve_assets_def(key).node_def
    return list(node.iterate_op_defs()) if isinstance(node, dg.GraphDefinition) else [node]
