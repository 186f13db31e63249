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
from collections.abc import Mapping
from typing import Any

import dagster as dg

from shared_code_location.storage_formats import StorageFormat, TensorBundle, encode

_CODE_VERSION_TAG = "dagster/code_version"
_DATA_VERSION_TAG = "dagster/data_version"
_INPUT_DATA_VERSION_TAG = "dagster/input_data_version/"

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


def stale_assets(
    defs: dg.Definitions, instance: dg.DagsterInstance, run_config: Mapping[str, Any] | None = None
) -> dict[dg.AssetKey, str]:
    """The materializable assets of `defs` that a run must rebuild, each with the reason, in dependency order.

    Reasons: reads input from outside Dagster (`EXTERNAL_INPUT_TAG`); never materialized; code version changed;
    an upstream asset in `defs` is rebuilt; an input has a new data version since it was read; or `run_config`
    gives one of the asset's ops a config other than the one its last materialization ran with (a run launched
    without config counts as `{}`).
    """
    graph = defs.resolve_asset_graph()
    local = set(graph.materializable_asset_keys)
    parents = {key: set(graph.get(key).parent_keys) for key in local}
    requested_ops = dict((run_config or {}).get("ops", {}))
    stale: dict[dg.AssetKey, str] = {}
    for key in (key for key in graph.toposorted_asset_keys if key in local):
        if source := graph.get(key).tags.get(EXTERNAL_INPUT_TAG):
            stale[key] = f"reads from outside Dagster ({source}): only a run can tell whether it changed"
            continue
        event = instance.get_latest_materialization_event(key)
        record = event.asset_materialization if event else None
        if record is None:
            stale[key] = "never materialized"
            continue
        tags = record.tags or {}
        code_version = graph.get(key).code_version
        if code_version is not None and tags.get(_CODE_VERSION_TAG) != code_version:
            stale[key] = f"code version {tags.get(_CODE_VERSION_TAG)} -> {code_version}"
            continue
        if rebuilt := sorted(p.to_user_string() for p in parents[key] if p in stale):
            stale[key] = f"upstream {', '.join(rebuilt)} is rebuilt"
            continue
        if changed := [p.to_user_string() for p in sorted(parents[key], key=str) if _input_changed(instance, p, tags)]:
            stale[key] = f"new data in {', '.join(changed)}"
            continue
        op_names = [op.name for op in op_defs(defs, key)]
        if any(name in requested_ops for name in op_names):
            run = instance.get_run_by_id(event.run_id)
            previous = ((run.run_config if run else {}) or {}).get("ops", {})
            if any(previous.get(name, {}) != requested_ops.get(name, {}) for name in op_names):
                stale[key] = "run config differs from the last materialization's"
    return stale


def _input_changed(instance: dg.DagsterInstance, parent: dg.AssetKey, tags: Mapping[str, str]) -> bool:
    read = tags.get(_INPUT_DATA_VERSION_TAG + parent.to_user_string())
    event = instance.get_latest_materialization_event(parent)
    current = (event.asset_materialization.tags or {}).get(_DATA_VERSION_TAG) if event else None
    return current is not None and read != current


def op_defs(defs: dg.Definitions, key: dg.AssetKey) -> list[dg.OpDefinition]:
    """The ops that compute `key`: one for an `@asset`, several for a graph-backed asset."""
    node = defs.resolve_assets_def(key).node_def
    return list(node.iterate_op_defs()) if isinstance(node, dg.GraphDefinition) else [node]
