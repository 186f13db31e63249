"""`model/trained_model`: the decoder-only transformer trained on the ETL tokens; best-validation weights."""

import dagster as dg
import numpy as np

from model_code_location.presets import TrainingConfig
from shared_code_location import settings
from shared_code_location.asset_keys import TRAIN_TOKENS, TRAINED_MODEL, VALIDATION_TOKENS, VOCABULARY, inputs
from shared_code_location.automation import ON_UPSTREAM_CHANGE
from shared_code_location.runs import SUMMARY_METADATA_KEY
from shared_code_location.storage_formats import StorageFormat, TensorBundle
from shared_code_location.versions import versioned_output

#: Bump when the training code changes in a way that changes the model; Dagster then marks the model stale.
TRAINING_CODE_VERSION = "1"


@dg.asset(
    **TRAINED_MODEL.produced(),
    group_name="model",
    ins=inputs(vocabulary=VOCABULARY, train_tokens=TRAIN_TOKENS, validation_tokens=VALIDATION_TOKENS),
    code_version=TRAINING_CODE_VERSION,
    automation_condition=ON_UPSTREAM_CHANGE,
    # One training at a time: the instance's pool limit (dagster.yaml, default_limit 1) applies to this pool.
    pool="training",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    vocabulary: dict,
    train_tokens: np.ndarray,
    validation_tokens: np.ndarray,
) -> dg.Output[TensorBundle]:
    """Train with the chosen preset and overrides; store weights as safetensors with config and summary."""
    from model_code_location.checkpoints import CheckpointStore, checkpoint_key
    from model_code_location.loss_curve import loss_curve_markdown
    from model_code_location.training import train
    from shared_code_location.transformer import to_tensor_bundle

    hp = config.resolved()
    context.log.info(f"hyperparameters: {hp}")
    key = checkpoint_key(TRAINING_CODE_VERSION, hp, train_tokens, validation_tokens)
    checkpoints = CheckpointStore(settings.storage_uri(), key)
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
            SUMMARY_METADATA_KEY: f"validation loss {summary['validation_loss']:.4f} nats/char after "
            f"{summary['wall_seconds']:.0f} s on {summary['device']} ({hp['preset']} preset)",
            "preset": dg.MetadataValue.text(hp["preset"]),
            "hyperparameters": dg.MetadataValue.json(hp),
            "loss_curve": dg.MetadataValue.md(loss_curve_markdown(result.history, f"{hp['preset']} preset")),
        }
    )
    bundle = to_tensor_bundle(result.model, hyperparameters=hp, training_summary=summary, history=result.history)
    # Versioned by its weights: evaluate and deploy go stale only when retraining changed them.
    return versioned_output(bundle, StorageFormat.SAFETENSORS)
