"""What this machine cannot run, and why: an experiment that trains on GPUs it lacks, and whatever reads a partition
that another location skipped. `cli.py run` (`runs.py`) skips such targets with one line each, and the model asset
itself skips a GPU experiment where no GPU is (the daemon's runs), so that a CPU-only machine trains the rest and
ranks them without failing or waiting for a GPU that will never come.

torch (for counting CUDA devices) is imported only when an experiment asks for GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from shared_code_location import settings
from shared_code_location.contract.experiments import GPUS_METADATA_KEY
from shared_code_location.contract.versions import latest_materialization
from shared_code_location.runtime.staleness import Target, op_defs


def cuda_devices() -> int:
    """The CUDA devices this process sees (0 without torch or a GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def gpu_shortfall(workers: int, gpus_per_worker: int) -> str | None:
    """None if an experiment of `workers` × `gpus_per_worker` can train from here; else why not ("trains on ...").
    One worker trains
    in the run's process, on this machine's GPU; more train on Ray: the configured cluster's GPUs
    (`ML_PIPELINE_RAY_ADDRESS`, which waits for them), else a local cluster's, this machine's."""
    if not gpus_per_worker or (workers > 1 and settings.RAY_ADDRESS.get()):
        return None
    needed = 1 if workers == 1 else workers * gpus_per_worker
    found = cuda_devices()
    if found >= needed:
        return None
    where = "in the run's process" if workers == 1 else f"on {workers} Ray workers of this machine"
    return (
        f"trains on {needed} CUDA GPU{'s' if needed > 1 else ''} {where} (gpus_per_worker: {gpus_per_worker}) "
        f"and this machine has {found or 'none'}"
    )


def unrunnable(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    targets: Iterable[Target],
    run_config: Mapping[str, Any] | None = None,
) -> dict[Target, str]:
    """The `targets` (in dependency order) this machine cannot run, each with why: an experiment whose GPUs are
    missing (`gpu_shortfall`, from the asset's `GPUS_METADATA_KEY` metadata, with `run_config`'s workers and GPUs
    on top); one whose input partition from another location was never materialized (that location skipped it);
    and what reads a skipped target."""
    ops = dict((run_config or {}).get("ops", {}))
    graph = defs.resolve_asset_graph()
    local = set(graph.materializable_asset_keys)
    skipped: dict[Target, str] = {}
    for target in targets:
        if target.partition is None:
            continue
        node = graph.get(target.key)
        needs: Mapping[str, Any] = getattr(gpus := (node.metadata or {}).get(GPUS_METADATA_KEY), "value", gpus) or {}
        if target.partition in needs:
            scaling = dict(needs[target.partition])
            for op in op_defs(defs, target.key):  # `--set gpus_per_worker=0` trains it on the CPU
                config = ops.get(op.name, {}).get("config", {})
                scaling |= {name: value for name, value in config.items() if name in scaling}
            if why := gpu_shortfall(**scaling):
                skipped[target] = f"experiment {target.partition} {why}"
                continue
        for parent in sorted(node.parent_keys, key=str):
            upstream = Target(parent, target.partition)
            if upstream in skipped:
                skipped[target] = f"its input {upstream} is skipped"
                break
            elsewhere = parent not in local and graph.has(parent) and graph.get(parent).is_partitioned
            if elsewhere and latest_materialization(instance, parent, target.partition) is None:
                skipped[target] = f"its input {upstream} was never materialized"
                break
    return skipped
