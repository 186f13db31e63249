"""Staleness: which assets a re-run must rebuild, and why (what `cli.py run` skips, and what it prints).

An asset is stale when it was never materialized, when its code version changed since, when an input's current
data version differs from the one it read (`contract/versions.py`), when its experiment's declaration or its input
file changed, when a partition it read was removed, when a blocking check of it failed, or when the run would give
it other settings than its last materialization ran with: for a partition whose asset names a settings resolver
(the model: its hyperparameters, from the experiment's YAML, the run config and a preset forced by the environment),
the settings it recorded; for any other asset, the config its ops ran with. That is what the UI shows too, so that
a re-run with unchanged code, data and settings trains nothing.

An asset stale only because an upstream asset of the same location is rebuilt is decided again once that upstream
ran (`waits_on_upstream`): if the upstream kept its data version (the leaderboard keeps its winner), it is not.
"""

from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg

from shared_code_location.contract.corpus_files import recorded_source
from shared_code_location.contract.experiments import (
    DECLARATIONS_METADATA_KEY,
    DECLARED_METADATA_KEY,
    recorded_fingerprint,
    recorded_settings,
    settings_resolver,
)
from shared_code_location.contract.versions import (
    EXTERNAL_INPUT_TAG,
    INPUT_PARTITIONS_METADATA_KEY,
    data_version,
    input_data_version,
    latest_materialization,
)
from shared_code_location.private_dagster import CODE_VERSION_TAG

#: The reason of a target stale only because an upstream asset of its location is rebuilt: its start and end.
_REBUILT = ("upstream ", " is rebuilt")


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
    settled: Collection[Target] = (),
) -> dict[Target, str]:
    """What of `defs` a run must rebuild (each asset, or each partition of a partitioned asset), each with the
    reason, in dependency order. `partitions`: `{partitions name: keys}`, to restrict the assets partitioned so
    (`--experiment`); `sources`: `{partitions name: {key: fingerprint}}`, the current fingerprint of what each
    partition reads from outside Dagster (`corpus_files.folder_files`); `settled`: targets this run already
    materialized, neither stale again nor a reason for their children to be.

    Reasons: reads input from outside Dagster (`EXTERNAL_INPUT_TAG`); never materialized; code version changed;
    an upstream asset in `defs` is rebuilt; an input has a new data version since it was read, or a partition it
    read was removed; the experiment's declaration changed since its partition was trained; the input file of a
    partition changed since it was read; a blocking check of an unpartitioned asset failed at its last evaluation
    (a re-run must not take a failed gate as settled); or the run would give it other settings than its last
    materialization ran with (see the module docstring; a run launched without config counts as `{}`).
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
            if target in settled:
                continue
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
                stale[target] = f"{_REBUILT[0]}{', '.join(rebuilt)}{_REBUILT[1]}"
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
            if (changed := _settings_changed(node, partition, record, op_names, requested_ops)) is not None:
                if changed:
                    stale[target] = changed
                continue
            run = instance.get_run_by_id(record.run_id)
            previous = ((run.run_config if run else {}) or {}).get("ops", {})
            if any(previous.get(name, {}) != requested_ops.get(name, {}) for name in op_names):
                stale[target] = "run config differs from the last materialization's"
    return stale


#: How many changed settings a reason names before it says "and N more".
_SETTINGS_SHOWN = 4


def _settings_changed(
    node: Any, partition: str | None, record: dg.EventLogRecord, op_names: list[str], requested: Mapping[str, Any]
) -> str | None:
    """Why the settings this run would give a partition differ from those it recorded: `""` when they are the
    same; None when its asset names no settings resolver or the materialization recorded none (then its op config
    is compared instead). Only settings both sides have are compared: one the code added since is its code version's
    business."""
    metadata = node.metadata or {}
    resolver, trained = settings_resolver(metadata), recorded_settings(record)
    if resolver is None or trained is None or len(op_names) != 1:
        return None
    declarations = metadata.get(DECLARATIONS_METADATA_KEY)
    declaration = (getattr(declarations, "value", declarations) or {}).get(partition)
    config = requested.get(op_names[0], {}).get("config", {})
    try:
        wanted = dict(resolver(partition, declaration, config))
    except ValueError as error:  # a bad preset variable: the run fails with it, naming it
        return f"its settings do not resolve: {error}"
    # The preset first (it says the most), then the rest by name.
    names = sorted((name for name in trained if name in wanted), key=lambda name: (name != "preset", name))
    changes = [f"{name} {trained[name]} -> {wanted[name]}" for name in names if trained[name] != wanted[name]]
    if not changes:
        return ""
    more = f" and {len(changes) - _SETTINGS_SHOWN} more" if len(changes) > _SETTINGS_SHOWN else ""
    return f"trained with other settings than this run's: {', '.join(changes[:_SETTINGS_SHOWN])}{more}"


def waits_on_upstream(reason: str) -> bool:
    """Whether `reason` is only that an upstream asset of the same location is rebuilt: a target to decide again
    once that upstream ran, when its new data version is known."""
    return reason.startswith(_REBUILT[0]) and reason.endswith(_REBUILT[1])


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
    recorded = input_data_version(instance, record, parent, read[0])
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
