"""Experiments: named training configurations, each a partition of the model and of its evaluation.

The model location declares them (its `defs/experiments/defs.yaml`); the evaluate and deploy locations only see
the partitions. The partitions are *dynamic* and instance-wide: the set lives in the Dagster instance, not in code,
so a location that never imports the model location's code still partitions by the same names, and adding an
experiment to the YAML needs no code change anywhere else. A static list would have to be repeated in every
location that partitions by it, and a time window means nothing here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from shared_code_location.contract.versions import latest_materialization

#: The partitions of `model/trained_model` and `evaluate/evaluation_report`: one per declared experiment.
EXPERIMENTS = dg.DynamicPartitionsDefinition(name="experiments")

#: Definition metadata of the asset that declares the experiments: `{name: fingerprint}`, in declaration order.
DECLARED_METADATA_KEY = "declared_experiments"
#: Materialization metadata: the fingerprint of the experiment's declaration the partition was trained with.
FINGERPRINT_METADATA_KEY = "experiment_fingerprint"
#: Definition metadata of the asset that declares the experiments: `{name: declaration}`, as its YAML gives them.
DECLARATIONS_METADATA_KEY = "experiment_declarations"
#: Definition metadata: `dg.MetadataValue.python_artifact(fn)`, the function that says which settings a partition
#: would train with, `fn(experiment, declaration, op_config) -> dict` (the declaration's preset and overrides, the
#: run's config, a preset forced by the environment): what `cli.py run` compares with what it was trained with.
SETTINGS_RESOLVER_METADATA_KEY = "settings_resolver"
#: Materialization metadata: the settings a partition was actually trained with (the resolver's answer at the time).
SETTINGS_METADATA_KEY = "hyperparameters"
#: Definition metadata of the asset that declares the experiments: `{name: {"workers": n, "gpus_per_worker": g}}`
#: for those that train on GPUs, which a machine without them skips (`runtime/placement.py`).
GPUS_METADATA_KEY = "experiments_on_gpus"


def fingerprint(declaration: Mapping[str, Any]) -> str:
    """A short hash of an experiment's declaration (preset and overrides): it changes when the YAML entry does."""
    return hashlib.sha256(json.dumps(declaration, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(declarations: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """`{name: fingerprint}` of each experiment's declaration, in declaration order: what the model asset declares
    (`DECLARED_METADATA_KEY`) and what each partition records when trained (`FINGERPRINT_METADATA_KEY`)."""
    return {name: fingerprint(declaration) for name, declaration in declarations.items()}


def declared_experiments(defs: dg.Definitions) -> dict[str, str]:
    """`{name: fingerprint}` of the experiments the assets of `defs` declare; empty in locations that only consume."""
    declared: dict[str, str] = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        for spec in assets_def.specs:
            value = (spec.metadata or {}).get(DECLARED_METADATA_KEY)
            declared.update(getattr(value, "value", value) or {})
    return declared


def partition_sync_requests(
    instance: dg.DagsterInstance, declared: Mapping[str, str], partitions: dg.DynamicPartitionsDefinition = EXPERIMENTS
) -> tuple[list[str], list[str]]:
    """(added, removed): names to add to and delete from the instance's `partitions` (the experiments by default;
    the ETL's corpus files too) to match `declared`."""
    current = set(instance.get_dynamic_partitions(partitions.name))
    return [name for name in declared if name not in current], sorted(current - set(declared))


def sync_partitions(
    instance: dg.DagsterInstance, declared: Mapping[str, str], partitions: dg.DynamicPartitionsDefinition = EXPERIMENTS
) -> tuple[list[str], list[str]]:
    """Make the instance's `partitions` the declared ones; returns (added, removed)."""
    added, removed = partition_sync_requests(instance, declared, partitions)
    if added:
        instance.add_dynamic_partitions(partitions.name, added)
    for name in removed:
        instance.delete_dynamic_partition(partitions.name, name)
    return added, removed


def recorded_fingerprint(record: dg.EventLogRecord | None) -> str | None:
    """The experiment fingerprint a materialization recorded, or None."""
    materialization = record.asset_materialization if record else None
    value = (materialization.metadata if materialization else {}).get(FINGERPRINT_METADATA_KEY)
    return getattr(value, "value", value)


def changed_experiments(instance: dg.DagsterInstance, key: dg.AssetKey, declared: Mapping[str, str]) -> list[str]:
    """Declared experiments whose partition of `key` was trained with a different declaration than today's."""
    changed = []
    for name, current in declared.items():
        recorded = recorded_fingerprint(latest_materialization(instance, key, name))
        if recorded is not None and recorded != current:
            changed.append(name)
    return changed


def recorded_settings(record: dg.EventLogRecord | None) -> dict[str, Any] | None:
    """The settings a materialization recorded it ran with (`SETTINGS_METADATA_KEY`), or None."""
    materialization = record.asset_materialization if record else None
    value = (materialization.metadata if materialization else {}).get(SETTINGS_METADATA_KEY)
    return getattr(value, "value", value)


def settings_resolver(metadata: Mapping[str, Any]) -> Callable[..., Mapping[str, Any]] | None:
    """The function an asset's definition `metadata` names under `SETTINGS_RESOLVER_METADATA_KEY`, or None."""
    import importlib

    artifact = metadata.get(SETTINGS_RESOLVER_METADATA_KEY)
    if artifact is None:
        return None
    value = getattr(artifact, "value", artifact)
    return getattr(importlib.import_module(value.module), value.name)
