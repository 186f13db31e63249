"""Jobs that train experiments, the weekly retraining, and the automation sensor with the training run tags."""

import dagster as dg

from model_code_location.trained_model import TRAINING_JOB_NAME
from shared_code_location.contract.asset_keys import TRAINED_MODEL
from shared_code_location.contract.experiments import EXPERIMENTS
from shared_code_location.runtime.automation import automation_sensor

#: A training run whose process died (a lost node, a killed worker) is retried, and resumes from its checkpoint.
TRAINING_RUN_TAGS = {"dagster/max_retries": "2"}

training_job = dg.define_asset_job(
    TRAINING_JOB_NAME,
    selection=[TRAINED_MODEL.key],
    partitions_def=EXPERIMENTS,
    tags=TRAINING_RUN_TAGS,
    description="Train one experiment.",
)
#: The op that computes `model/trained_model`: Dagster names an asset's op after its key.
TRAINED_MODEL_OP = TRAINED_MODEL.key.to_python_identifier()

# The gpu preset, tagged so that a run launcher that can place runs on GPU nodes (Kubernetes) asks for one.
gpu_training_job = dg.define_asset_job(
    "gpu_training_job",
    selection=[TRAINED_MODEL.key],
    partitions_def=EXPERIMENTS,
    config={"ops": {TRAINED_MODEL_OP: {"config": {"preset": "gpu", "device": "cuda"}}}},
    tags=TRAINING_RUN_TAGS
    | {
        "accelerator": "nvidia-gpu",
        "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    },
    description="Train one experiment with the gpu preset on a CUDA device.",
)


@dg.schedule(
    job=training_job,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retraining of every experiment; stopped by default (turn it on in the UI under Automation).",
)
def weekly_retraining(context: dg.ScheduleEvaluationContext):
    """One run per experiment, keyed by the tick so that a re-evaluated tick launches nothing twice."""
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    for name in context.instance.get_dynamic_partitions(EXPERIMENTS.name):
        yield dg.RunRequest(partition_key=name, run_key=f"{tick}:{name}")


model_automation = automation_sensor(__file__, run_tags=TRAINING_RUN_TAGS)
