"""Distributed training on Ray against one worker, same global batch, same steps, through the path the asset takes.

`python -m model_code_location.benchmark_distributed --storage DIR` (run by scripts/benchmark_distributed.py). Prints
JSON: the local cluster's start-up and stop; per configuration (Ray workers × threads, and the one-process path
in the run for reference) tokens/s of the training steps, the final validation loss, and the wall time of the whole
Ray job (workers' start-up included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared_code_location.contract.token_shards import TokenShards


def ray_training(
    cluster_address: str, train_ids: TokenShards, validation_ids: TokenShards, vocab_size: int, hp: dict
) -> dict:
    """Train `hp` with `ray_job.fit` (the job's own code: TorchTrainer, one `train()` rank per worker) on the
    cluster; its summary plus the job's wall time."""
    from upath import UPath

    from model_code_location.checkpoints import CheckpointStore, checkpoint_key
    from model_code_location.ray_job import fit

    with tempfile.TemporaryDirectory() as folder:
        store = CheckpointStore(UPath(folder), checkpoint_key("benchmark", hp, train_ids, validation_ids))
        store.save_inputs(train_ids, validation_ids, vocab_size)
        spec = {"experiment": "benchmark", "storage": folder, "checkpoint_key": store.key, "hyperparameters": hp}
        started = time.perf_counter()
        summary = fit(spec, log=lambda _: None, ray_address=cluster_address)
        return summary | {"job_seconds": time.perf_counter() - started}


def in_process(train_ids: TokenShards, validation_ids: TokenShards, vocab_size: int, hp: dict, threads: int) -> dict:
    """The one-worker path: `train()` in this process with `threads` torch threads."""
    import torch

    from model_code_location.training import train

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train(train_ids, validation_ids, vocab_size, hp, log=lambda _: None).summary
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True, help="the IO manager's storage (folder or URI) holding etl/")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--starts", type=int, default=3, help="local cluster starts to time")
    args = parser.parse_args()
    import os

    from model_code_location.ray_cluster import LOOPBACK_ENVIRONMENT, LocalRayCluster

    os.environ.update(LOOPBACK_ENVIRONMENT)  # this process is the Ray driver: before ray is imported
    from upath import UPath

    from model_code_location.presets import TrainingConfig
    from shared_code_location.contract.storage_formats import StorageFormat, decode
    from shared_code_location.contract.token_shards import TokenShards

    storage = UPath(args.storage)
    train_ids = TokenShards.open(storage, "etl/train_tokens.json")
    validation_ids = TokenShards.open(storage, "etl/validation_tokens.json")
    vocab_size = decode(StorageFormat.JSON, (storage / "etl" / "vocabulary.json").read_bytes())["vocab_size"]
    # No evaluation until the last step, no checkpoint: the figures are of training steps.
    base = TrainingConfig(
        preset=args.preset, max_iters=args.iters, eval_interval=10**9, checkpoint_interval=0, device="cpu"
    ).resolved()

    results = {}
    # First, before Ray is in this process: the one-process path, with one thread and with every core.
    for threads in (1, 2):
        results[f"in-process 1x{threads}"] = in_process(train_ids, validation_ids, vocab_size, base, threads)
    starts, stops = [], []
    for _ in range(args.starts):
        cluster = LocalRayCluster(num_cpus=2).start()
        starts.append(cluster.startup_seconds)
        stopping = time.perf_counter()
        cluster.stop()
        stops.append(time.perf_counter() - stopping)
    with LocalRayCluster(num_cpus=2) as cluster:
        try:
            for workers in (1, 2):
                hp = base | {"workers": workers, "cpus_per_worker": 1}
                run = ray_training(cluster.gcs_address, train_ids, validation_ids, vocab_size, hp)
                results[f"ray {workers}x1"] = run
        finally:
            import ray

            ray.shutdown()  # before the cluster goes
    print(
        json.dumps(
            {
                "preset": args.preset,
                "iters": args.iters,
                "global_batch_tokens": base["batch_size"] * base["block_size"],
                "cluster_start_seconds": statistics.median(starts),
                "cluster_start_seconds_all": starts,
                "cluster_stop_seconds": statistics.median(stops),
                "runs": {
                    name: {
                        "tokens_per_second": r["tokens_per_second"],
                        "validation_loss": r["validation_loss"],
                        "train_seconds": r["train_seconds"],
                        "job_seconds": r.get("job_seconds"),
                    }
                    for name, r in results.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
