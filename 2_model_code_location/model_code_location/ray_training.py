"""Training on Ray, from `model/trained_model`: what the asset does for an experiment of more than one worker.

1. The token manifests go to the pipeline's storage beside the checkpoint (`CheckpointStore.save_inputs`); every
   worker reads the shards they list, on any node.
2. The cluster: `RayCluster.connect` (the configured one, or a local one started for this training).
3. The job: `ray_job.py`, submitted with dagster-ray's `PipesRayJobClient` (a Ray job, through the cluster's job
   API). Its log lines and its reported metadata come back through Pipes while it runs; a run terminated from
   Dagster stops the job.
4. The result: rank 0 wrote the weights beside the checkpoint; they are read here and returned to the asset, which
   stores them through the IO manager, as the one-process path does.

A cluster that cannot be reached, or that dies mid-way, fails the run with a `RayClusterError` naming its address;
nothing is written to the asset's output, so the last good model stays, and the run's retry resumes from the last
checkpoint.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

import dagster as dg

from model_code_location.ray_cluster import RayCluster
from shared_code_location.contract.storage_formats import TensorBundle
from shared_code_location.contract.token_shards import TokenShards

if TYPE_CHECKING:
    from model_code_location.checkpoints import CheckpointStore

#: The job's entrypoint module (`python -m`), on the cluster.
JOB_MODULE = "model_code_location.ray_job"
#: Ray job metadata naming the training a job belongs to (its checkpoint key).
CHECKPOINT_KEY_JOB_METADATA = "ml_pipeline_checkpoint_key"


class RayTrainingError(RuntimeError):
    """The training job failed on a cluster that is still up: the message has the job's own error."""


def job_spec(experiment: str, store: CheckpointStore, hp: dict[str, Any]) -> dict[str, Any]:
    """What the job trains, as Pipes extras (JSON): the experiment, the storage and key of its checkpoint (and
    inputs, and result), and the hyperparameters. No credentials: the cluster reaches storage with its own
    settings (`ML_PIPELINE_S3_*`)."""
    return {"experiment": experiment, "storage": str(store.root), "checkpoint_key": store.key, "hyperparameters": hp}


def train_on_ray(
    context: dg.AssetExecutionContext,
    cluster: RayCluster,
    store: CheckpointStore,
    hp: dict[str, Any],
    train_ids: TokenShards,
    validation_ids: TokenShards,
    vocab_size: int,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train on Ray with `hp["workers"]` workers; returns the trained model (as `to_tensor_bundle` makes it) and
    the metadata the job reported through Pipes (its summary, restarts, and Ray's job id and timings)."""
    from dagster_ray import PipesRayJobClient

    experiment = hp["experiment"]
    store.save_inputs(train_ids, validation_ids, vocab_size)
    started = time.perf_counter()
    cpus, gpus = hp["workers"] * hp["cpus_per_worker"], hp["workers"] * hp["gpus_per_worker"]
    with cluster.connect(cpus, gpus, context.log.info) as connection:
        connected = time.perf_counter()
        try:
            client = PipesRayJobClient(address=connection.address, poll_interval=1.0)
            _stop_earlier_jobs(client, store.key, context)
            invocation = client.run(
                context=context,
                submit_job_params={
                    "entrypoint": f"{shlex.quote(connection.python)} -m {JOB_MODULE}",
                    "metadata": {CHECKPOINT_KEY_JOB_METADATA: store.key, "experiment": experiment},
                    # The driver only waits on the workers: it takes no CPU from them.
                    "entrypoint_num_cpus": 0,
                },
                extras=job_spec(experiment, store, hp),
            )
        except Exception as error:
            failure = connection.failure(error, f"training experiment {experiment!r}")
            if failure is not None:
                raise failure from error
            if isinstance(error, RuntimeError) and "[pipes] Ray job" in str(error):
                raise RayTrainingError(
                    f"training experiment {experiment!r} on Ray failed: {_last_line(error)}"
                ) from error
            raise
    finished = time.perf_counter()
    bundle = store.load_result()
    if bundle is None:
        raise RayTrainingError(
            f"the Ray job of experiment {experiment!r} ended without a result at {store.result_path}"
        )
    reported = {key: value.value for key, value in invocation.get_materialize_result().metadata.items()}
    store.clear_exchange()
    timings = {
        "ray_address": connection.address,
        "ray_connect_seconds": connected - started,  # a local cluster's start-up, else one request
        "ray_job_seconds": finished - connected,  # submission to the end: the workers' start-up and the training
    }
    return bundle, reported | timings


def _stop_earlier_jobs(client: Any, key: str, context: dg.AssetExecutionContext) -> None:
    """Stop jobs of the same training still running on the cluster (the run that submitted them died, and this is
    its retry): two jobs would write the same checkpoint."""
    for job in client.client.list_jobs():
        if (job.metadata or {}).get(CHECKPOINT_KEY_JOB_METADATA) == key and not job.status.is_terminal():
            context.log.warning(f"stopping Ray job {job.submission_id}, an earlier run's training of this experiment")
            client.client.stop_job(job.submission_id)
            deadline = time.monotonic() + 60
            while not client.client.get_job_status(job.submission_id).is_terminal() and time.monotonic() < deadline:
                time.sleep(1)


def _last_line(error: BaseException) -> str:
    """The last non-empty line of an error's message: the job's own exception, at the end of its logs."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
