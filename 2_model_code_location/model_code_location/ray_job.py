"""The Ray job that trains one experiment on several workers: `python -m model_code_location.ray_job`, submitted by
`model/trained_model` through Dagster Pipes (see `ray_training.py`). It runs on the Ray cluster, in the model
location's environment: this venv for the local cluster, the model location's image for Compose and KubeRay.

It is the external side of the Pipes session: it reads what to train from the Pipes extras, runs Ray Train's
`TorchTrainer` with one `train()` rank per worker (DDP over gloo on CPUs, NCCL on GPUs; each worker compiles its
own model as `compile` says, sharing the compile cache of its node), forwards rank 0's log lines
to the Dagster run as Pipes log messages while it trains, and reports the trained model's figures as the
materialization's metadata. The weights go to the pipeline's storage (rank 0 writes them beside the checkpoint),
where the asset reads them and hands them to the IO manager.

A worker that dies (a node lost, an out-of-memory kill, `kill -9`) fails its group; Ray Train starts the group again
(up to `MAX_WORKER_GROUP_RESTARTS` times) and every rank resumes from the last checkpoint, the same checkpoint a
Dagster retry of the run resumes from.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any

#: Worker-group failures Ray Train recovers from (each resumes from the last checkpoint) before the job fails;
#: the Dagster run's retries (`dagster/max_retries`) come on top.
MAX_WORKER_GROUP_RESTARTS = 3
#: The metadata entries the job reports, besides the training summary's figures.
RESTARTS_METADATA_KEY = "worker_group_restarts"
STEPS_REDONE_METADATA_KEY = "steps_redone"

_STEP = re.compile(r"^step (\d+)/")
_RESUMED = re.compile(r"^resumed from the checkpoint at step (\d+)")


def main() -> None:
    """The job's entrypoint: train what the Pipes extras say, report back through Pipes."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        outcome = fit(pipes.extras, log=pipes.log.info)
        pipes.report_asset_materialization(metadata=outcome)


def fit(spec: dict[str, Any], log: Callable[[str], None], ray_address: str | None = None) -> dict[str, Any]:
    """Train `spec` (experiment, storage, checkpoint_key, hyperparameters; see `ray_training.job_spec`) with a
    `TorchTrainer` on the cluster at `ray_address` (default: the job's own cluster) and return the training
    summary plus the worker-group restarts and the steps they redid. Rank 0's log lines go to `log` as they come."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    hp = spec["hyperparameters"]
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=True)
    available = ray.cluster_resources()
    needed = {"CPU": hp["workers"] * hp["cpus_per_worker"], "GPU": hp["workers"] * hp["gpus_per_worker"]}
    if any(available.get(name, 0) < amount for name, amount in needed.items() if amount):
        # An autoscaling cluster (KubeRay) adds nodes for the request; a fixed one would wait forever: say so.
        log(f"the cluster has {available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs; the workers "
            f"need {needed['CPU']:g} and {needed['GPU']:g}: waiting for the cluster to grow")  # fmt: skip
    progress = Queue(actor_options={"num_cpus": 0})
    forwarder = _Forwarder(progress, log)
    # Ray Train's own storage holds only its run's marker files: checkpoints live in the pipeline's storage.
    storage = tempfile.mkdtemp(prefix="ray-train-")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec, "progress": progress},
        torch_config=TorchConfig(backend=process_group_backend(hp)),
        scaling_config=ScalingConfig(
            num_workers=hp["workers"],
            use_gpu=hp["gpus_per_worker"] > 0,
            resources_per_worker={"CPU": hp["cpus_per_worker"], "GPU": hp["gpus_per_worker"]},
        ),
        run_config=RunConfig(
            name=f"{spec['experiment']}-{uuid.uuid4().hex[:8]}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=MAX_WORKER_GROUP_RESTARTS),
        ),
    )
    forwarder.start()
    try:
        result = trainer.fit()
    finally:
        forwarder.stop()
        shutil.rmtree(storage, ignore_errors=True)
    summary = dict(result.return_value or {})
    return summary | {RESTARTS_METADATA_KEY: forwarder.restarts, STEPS_REDONE_METADATA_KEY: forwarder.steps_redone}


def process_group_backend(hp: dict[str, Any]) -> str:
    """How the workers average gradients: NCCL between GPUs (`gpus_per_worker` >= 1), gloo between CPUs."""
    return "nccl" if hp["gpus_per_worker"] else "gloo"


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One worker of the `TorchTrainer`: one rank of `train()`. Rank 0 writes the result and returns the summary."""
    import ray.train
    import ray.train.torch
    import torch

    from model_code_location.checkpoints import CheckpointStore
    from model_code_location.training import train
    from shared_code_location.contract.storage import storage_path
    from shared_code_location.model.transformer import to_tensor_bundle

    spec, progress = config["spec"], config["progress"]
    hp = spec["hyperparameters"]
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(hp["cpus_per_worker"])
    store = CheckpointStore(storage_path(spec["storage"]), spec["checkpoint_key"])
    finished = store.load_result()
    if finished is not None:  # a group restarted after rank 0 wrote the result: nothing left to do
        return finished.metadata["training_summary"] if rank == 0 else None
    train_ids, validation_ids, vocab_size = store.load_inputs()
    if rank == 0:
        progress.put(("started", os.getpid()))

    def log(line: str) -> None:
        progress.put(("log", line))

    result = train(
        train_ids,
        validation_ids,
        vocab_size,
        hp,
        log,
        store,
        device=ray.train.torch.get_device(),
        clear_checkpoint=False,  # until the result is written: a restart in between resumes, not restarts
    )
    if result is None:
        return None
    bundle = to_tensor_bundle(result.model, hyperparameters=hp, training_summary=result.summary, history=result.history)
    store.save_result(bundle)
    store.clear()
    return result.summary


class _Forwarder:
    """Drains the progress queue that rank 0 fills, in a thread of the driver: log lines to `log`; counts the
    worker groups that started and the steps a restart redid (from the last step logged to the one resumed at)."""

    def __init__(self, progress: Any, log: Callable[[str], None]):
        self._progress, self._log = progress, log
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-train-progress", daemon=True)
        self.groups, self.steps_redone, self._last_step = 0, 0, 0

    @property
    def restarts(self) -> int:
        return max(0, self.groups - 1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                kind, value = self._progress.get(timeout=0.5)
            except Empty:
                if self._stopping.is_set():
                    return
                continue
            except Exception:  # the queue's actor is gone: the job is ending
                return
            if kind == "started":
                self.groups += 1
                if self.groups > 1:
                    self._log(f"worker group {self.groups} started (Ray Train restarted it after a worker failed)")
            elif kind == "log":
                if match := _STEP.match(value):
                    self._last_step = int(match.group(1))
                elif (match := _RESUMED.match(value)) and self.groups > 1:
                    redone = max(0, self._last_step - int(match.group(1)))
                    self.steps_redone += redone
                    value += f"; the {redone} steps after it are trained again"
                self._log(value)


if __name__ == "__main__":
    main()
