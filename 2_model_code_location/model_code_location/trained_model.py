"""`model/trained_model`: the decoder-only transformer trained on the ETL tokens, one partition per experiment;
best-validation weights. Built by the `Experiments` component from its YAML (see `experiments.py`)."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np

from model_code_location.presets import TrainingConfig
from shared_code_location.asset_keys import (
    IO_MANAGER_KEY,
    TRAIN_TOKENS,
    TRAINED_MODEL,
    VALIDATION_TOKENS,
    VOCABULARY,
    inputs,
)
from shared_code_location.automation import ON_UPSTREAM_CHANGE
from shared_code_location.experiments import (
    DECLARED_METADATA_KEY,
    EXPERIMENTS,
    FINGERPRINT_METADATA_KEY,
    changed_experiments,
    fingerprint,
    partition_sync_requests,
)
from shared_code_location.runs import SUMMARY_METADATA_KEY
from shared_code_location.storage_formats import StorageFormat, TensorBundle
from shared_code_location.versions import versioned_output

#: Bump when the training code changes in a way that changes the model; Dagster then marks the model stale.
TRAINING_CODE_VERSION = "1"
#: The job that trains one experiment (one partition) at a time.
TRAINING_JOB_NAME = "training_job"


def build_trained_model(experiments: Mapping[str, dict[str, Any]]) -> dg.AssetsDefinition:
    """The asset, partitioned by experiment; each partition trains with its declaration in `experiments`."""
    declared = {name: fingerprint(declaration) for name, declaration in experiments.items()}

    @dg.asset(
        **TRAINED_MODEL.produced(**{DECLARED_METADATA_KEY: dg.MetadataValue.json(declared)}),
        group_name="model",
        ins=inputs(vocabulary=VOCABULARY, train_tokens=TRAIN_TOKENS, validation_tokens=VALIDATION_TOKENS),
        code_version=TRAINING_CODE_VERSION,
        automation_condition=ON_UPSTREAM_CHANGE,
        # One training at a time: the instance's pool limit (dagster.yaml, default_limit 1) applies to this pool.
        pool="training",
        kinds={"pytorch", "safetensors"},
        owners=["team:ml"],
        required_resource_keys={IO_MANAGER_KEY},
    )
    def trained_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        vocabulary: dict,
        train_tokens: np.ndarray,
        validation_tokens: np.ndarray,
    ) -> dg.Output[TensorBundle]:
        """Train the run's experiment (its preset, overrides and this run's config); store weights as
        safetensors with config and summary."""
        from model_code_location.checkpoints import CheckpointStore, checkpoint_key
        from model_code_location.loss_curve import loss_curve_markdown
        from model_code_location.training import train
        from shared_code_location.transformer import to_tensor_bundle

        name = context.partition_key
        if name not in experiments:
            raise KeyError(
                f"experiment {name!r} is not declared in defs/experiments/defs.yaml ({', '.join(experiments)})"
            )
        hp = config.resolved(experiments[name]) | {"experiment": name}
        context.log.info(f"experiment {name}: {hp}")
        key = checkpoint_key(TRAINING_CODE_VERSION, hp, train_tokens, validation_tokens)
        # Beside the pipeline's data, through the IO manager's storage (its object store and credentials).
        checkpoints = CheckpointStore(context.resources.io_manager.root, key)
        result = train(train_tokens, validation_tokens, vocabulary["vocab_size"], hp, context.log.info, checkpoints)
        summary = result.summary
        context.add_output_metadata(
            {
                "validation_loss": dg.MetadataValue.float(summary["validation_loss"]),
                "train_loss": dg.MetadataValue.float(summary["train_loss"]),
                "tokens_per_second": dg.MetadataValue.float(summary["tokens_per_second"]),
                "parameters": dg.MetadataValue.int(summary["parameters"]),
                "best_step": dg.MetadataValue.int(summary["best_step"]),
                "wall_seconds": dg.MetadataValue.float(summary["wall_seconds"]),
                "device": dg.MetadataValue.text(summary["device"]),
                SUMMARY_METADATA_KEY: f"{name}: validation loss {summary['validation_loss']:.4f} nats/char after "
                f"{summary['wall_seconds']:.0f} s on {summary['device']} ({hp['preset']} preset)",
                "preset": dg.MetadataValue.text(hp["preset"]),
                "experiment": dg.MetadataValue.text(name),
                FINGERPRINT_METADATA_KEY: dg.MetadataValue.text(declared[name]),
                "hyperparameters": dg.MetadataValue.json(hp),
                "loss_curve": dg.MetadataValue.md(loss_curve_markdown(result.history, f"experiment {name}")),
            }
        )
        bundle = to_tensor_bundle(result.model, hyperparameters=hp, training_summary=summary, history=result.history)
        # Versioned by its weights: evaluate and deploy go stale only when retraining changed them.
        return versioned_output(bundle, StorageFormat.SAFETENSORS)

    return trained_model


def experiments_sensor(model: dg.AssetsDefinition, experiments: Mapping[str, dict[str, Any]]) -> dg.SensorDefinition:
    """Keeps the instance's experiment partitions equal to the YAML's and retrains an experiment whose YAML entry
    changed. New experiments are not requested here: they are missing partitions, which the automation trains."""
    declared = {name: fingerprint(declaration) for name, declaration in experiments.items()}

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
