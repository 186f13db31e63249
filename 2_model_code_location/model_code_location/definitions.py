"""The 2_model code location."""

import dagster as dg

from model_code_location.trained_model import trained_model
from shared_code_location.asset_keys import TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY
from shared_code_location.automation import automation_sensor
from shared_code_location.resources import pipeline_resources

#: A training run whose process died (a lost node, a killed worker) is retried, and resumes from its checkpoint.
TRAINING_RUN_TAGS = {"dagster/max_retries": "2"}

training_job = dg.define_asset_job(
    "training_job", selection=[trained_model.key], tags=TRAINING_RUN_TAGS, description="Train the model."
)
# The gpu preset, tagged so that a run launcher that can place runs on GPU nodes (Kubernetes) asks for one.
gpu_training_job = dg.define_asset_job(
    "gpu_training_job",
    selection=[trained_model.key],
    config={"ops": {"model__trained_model": {"config": {"preset": "gpu", "device": "cuda"}}}},
    tags=TRAINING_RUN_TAGS
    | {
        "accelerator": "nvidia-gpu",
        "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    },
    description="Train with the gpu preset on a CUDA device.",
)
#: Weekly retraining; stopped by default (turn it on in the UI under Automation).
weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=training_job,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(
    assets=[VOCABULARY.spec(), TRAIN_TOKENS.spec(), VALIDATION_TOKENS.spec(), trained_model],
    jobs=[training_job, gpu_training_job],
    schedules=[weekly_retraining],
    sensors=[automation_sensor("2_model", run_tags=TRAINING_RUN_TAGS)],
    resources=pipeline_resources(),
    executor=dg.in_process_executor,
)
