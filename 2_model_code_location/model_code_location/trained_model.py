"""`model/trained_model`: the decoder-only transformer trained on the ETL tokens, one partition per experiment;
best-validation weights. Built by the `Experiments` component from its YAML (see `experiments.py`)."""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from model_code_location.experiments import effective_hyperparameters
from model_code_location.presets import TrainingConfig
from model_code_location.ray_cluster import RAY_RESOURCE_KEY
from shared_code_location.contract.asset_keys import (
    IO_MANAGER_KEY,
    SUMMARY_METADATA_KEY,
    TRAIN_TOKENS,
    TRAINED_MODEL,
    VALIDATION_TOKENS,
    VOCABULARY,
    inputs,
)
from shared_code_location.contract.experiments import (
    DECLARATIONS_METADATA_KEY,
    DECLARED_METADATA_KEY,
    EXPERIMENTS,
    FINGERPRINT_METADATA_KEY,
    GPUS_METADATA_KEY,
    SETTINGS_METADATA_KEY,
    SETTINGS_RESOLVER_METADATA_KEY,
    changed_experiments,
    fingerprints,
    partition_sync_requests,
)
from shared_code_location.contract.storage_formats import StorageFormat, TensorBundle
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.contract.versions import versioned_output
from shared_code_location.runtime.automation import ON_UPSTREAM_CHANGE
from shared_code_location.runtime.placement import gpu_shortfall

#: Bump when the training code changes in a way that changes the model; Dagster then marks the model stale.
TRAINING_CODE_VERSION = "1"
#: The job that trains one experiment (one partition) at a time.
TRAINING_JOB_NAME = "training_job"


def build_trained_model(experiments: Mapping[str, dict[str, Any]]) -> dg.AssetsDefinition:
    """The asset, partitioned by experiment; each partition trains with its declaration in `experiments`."""
    declared = fingerprints(experiments)
    # The experiments that train on GPUs: a machine without them skips them (`runtime/placement.py`).
    on_gpus = {
        name: {"workers": scaling.get("workers", 1), "gpus_per_worker": scaling["gpus_per_worker"]}
        for name, declaration in experiments.items()
        if (scaling := declaration.get("scaling") or {}).get("gpus_per_worker")
    }
    metadata = {
        DECLARED_METADATA_KEY: dg.MetadataValue.json(declared),
        # What each experiment trains with, asked again by `cli.py run` to see what a run would change.
        DECLARATIONS_METADATA_KEY: dg.MetadataValue.json(dict(experiments)),
        SETTINGS_RESOLVER_METADATA_KEY: dg.MetadataValue.python_artifact(effective_hyperparameters),
        GPUS_METADATA_KEY: dg.MetadataValue.json(on_gpus),
    }

    @dg.asset(
        **TRAINED_MODEL.produced(**metadata),
        group_name="model",
        ins=inputs(vocabulary=VOCABULARY, train_tokens=TRAIN_TOKENS, validation_tokens=VALIDATION_TOKENS),
        code_version=TRAINING_CODE_VERSION,
        automation_condition=ON_UPSTREAM_CHANGE,
        # One training at a time: the instance's pool limit (dagster.yaml, default_limit 1) applies to this pool.
        pool="training",
        kinds={"pytorch", "safetensors"},
        owners=["team:ml"],
        # The Ray cluster of experiments with more than one worker (see ray_cluster.py).
        required_resource_keys={IO_MANAGER_KEY, RAY_RESOURCE_KEY},
        # A GPU experiment on a machine without a GPU yields nothing: the run says why and succeeds.
        output_required=False,
    )
    def trained_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        vocabulary: dict,
        train_tokens: TokenShards,
        validation_tokens: TokenShards,
    ) -> Iterator[dg.Output[TensorBundle]]:
        """Train the run's experiment (its preset, overrides and this run's config); store weights as
        safetensors with config and summary. One worker trains here, in the run's process; more train on Ray
        (`ray_training.py`), launched through Dagster Pipes, with the same loop, checkpoints and metadata. An
        experiment on GPUs that this machine lacks is skipped: logged, nothing written (the partition stays as it
        was, and what reads it waits)."""
        from model_code_location.checkpoints import CheckpointStore, checkpoint_key

        name = context.partition_key
        if name not in experiments:
            raise KeyError(
                f"experiment {name!r} is not declared in defs/experiments/defs.yaml ({', '.join(experiments)})"
            )
        hp = effective_hyperparameters(name, experiments[name], config.model_dump(exclude_none=True))
        if why := gpu_shortfall(hp["workers"], hp["gpus_per_worker"]):
            context.log.warning(f"experiment {name} skipped: it {why}")
            return  # no output: a generator that yields nothing materializes nothing
        context.log.info(f"experiment {name}: {hp}")
        key = checkpoint_key(TRAINING_CODE_VERSION, hp, train_tokens, validation_tokens)
        # Beside the pipeline's data, through the IO manager's storage (its object store and credentials).
        checkpoints = CheckpointStore(context.resources.io_manager.root, key)
        if hp["workers"] > 1:
            from model_code_location.ray_training import train_on_ray

            ray = getattr(context.resources, RAY_RESOURCE_KEY)
            vocab_size = vocabulary["vocab_size"]
            bundle, reported = train_on_ray(context, ray, checkpoints, hp, train_tokens, validation_tokens, vocab_size)
            summary = {k: reported.get(k, v) for k, v in bundle.metadata["training_summary"].items()}
            history, extra = bundle.metadata["history"], _ray_metadata(reported)
        else:
            from model_code_location.training import train
            from shared_code_location.model.transformer import to_tensor_bundle

            result = train(train_tokens, validation_tokens, vocabulary["vocab_size"], hp, context.log.info, checkpoints)
            summary, history, extra = result.summary, result.history, {}
            bundle = to_tensor_bundle(result.model, hyperparameters=hp, training_summary=summary, history=history)
        context.add_output_metadata(training_metadata(name, hp, summary, history, declared[name]) | extra)
        # Versioned by its weights: evaluate and deploy go stale only when retraining changed them.
        yield versioned_output(bundle, StorageFormat.SAFETENSORS)

    return trained_model


def training_metadata(
    name: str, hp: dict[str, Any], summary: dict[str, Any], history: dict[str, Any], fingerprint_: str
) -> dict[str, Any]:
    """The materialization's metadata, the same however the experiment trained: figures, loss curve, config."""
    from model_code_location.loss_curve import loss_curve_markdown

    workers = summary.get("workers", 1)
    where = f"{workers} workers on Ray, {summary['device']}" if workers > 1 else summary["device"]
    return {
        "validation_loss": dg.MetadataValue.float(summary["validation_loss"]),
        "train_loss": dg.MetadataValue.float(summary["train_loss"]),
        "tokens_per_second": dg.MetadataValue.float(summary["tokens_per_second"]),
        "parameters": dg.MetadataValue.int(summary["parameters"]),
        "best_step": dg.MetadataValue.int(summary["best_step"]),
        # Where training stopped and why: max_iters, or early stopping (patience).
        "stopped_step": dg.MetadataValue.int(summary.get("stopped_step", hp["max_iters"])),
        "stop_reason": dg.MetadataValue.text(summary.get("stop_reason", "max_iters reached")),
        "compile": dg.MetadataValue.text(summary.get("compile_decision", "compile: off")),
        "wall_seconds": dg.MetadataValue.float(summary["wall_seconds"]),
        "device": dg.MetadataValue.text(summary["device"]),
        "workers": dg.MetadataValue.int(workers),
        SUMMARY_METADATA_KEY: f"{name}: validation loss {summary['validation_loss']:.4f} nats/char after "
        f"{summary['wall_seconds']:.0f} s on {where} ({hp['preset']} preset)",
        "preset": dg.MetadataValue.text(hp["preset"]),
        "experiment": dg.MetadataValue.text(name),
        FINGERPRINT_METADATA_KEY: dg.MetadataValue.text(fingerprint_),
        SETTINGS_METADATA_KEY: dg.MetadataValue.json(hp),
        "loss_curve": dg.MetadataValue.md(loss_curve_markdown(history, f"experiment {name}")),
    }


def _ray_metadata(reported: dict[str, Any]) -> dict[str, Any]:
    """What only a training on Ray has: its job, its cluster, its restarts and what Ray cost in time."""
    from model_code_location.ray_job import RESTARTS_METADATA_KEY, STEPS_REDONE_METADATA_KEY

    return {
        "ray_job_id": dg.MetadataValue.text(str(reported.get("Ray Job ID", ""))),
        "ray_address": dg.MetadataValue.text(reported["ray_address"]),
        RESTARTS_METADATA_KEY: dg.MetadataValue.int(reported.get(RESTARTS_METADATA_KEY, 0)),
        STEPS_REDONE_METADATA_KEY: dg.MetadataValue.int(reported.get(STEPS_REDONE_METADATA_KEY, 0)),
        "ray_connect_seconds": dg.MetadataValue.float(reported["ray_connect_seconds"]),
        "ray_job_seconds": dg.MetadataValue.float(reported["ray_job_seconds"]),
    }


def experiments_sensor(model: dg.AssetsDefinition) -> dg.SensorDefinition:
    """Keeps the instance's experiment partitions equal to the YAML's and retrains an experiment whose YAML entry
    changed. New experiments are not requested here: they are missing partitions, which the automation trains."""
    declared = model.specs_by_key[model.key].metadata[DECLARED_METADATA_KEY].value  # what the asset declares

    @dg.sensor(
        name="experiments_sensor",
        job_name=TRAINING_JOB_NAME,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds and removes experiment partitions to match defs/experiments/defs.yaml; retrains an "
        "experiment whose entry changed.",
    )
    def sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        added, removed = partition_sync_requests(context.instance, declared)
        changed = changed_experiments(context.instance, model.key, declared)
        if not (added or removed or changed):
            return dg.SkipReason("the experiment partitions match the YAML; no experiment changed")
        requests = []
        if added:
            requests.append(EXPERIMENTS.build_add_request(added))
        if removed:
            requests.append(EXPERIMENTS.build_delete_request(removed))
        runs = [
            # One run per changed declaration: the run key makes a re-evaluated tick launch it only once.
            dg.RunRequest(
                partition_key=name, run_key=f"{name}:{declared[name]}", tags={"trigger": "experiment changed"}
            )
            for name in changed
        ]
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)

    return sensor
