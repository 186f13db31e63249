"""The 2_model code location."""

import dagster as dg

from model_code_location.trained_model import trained_model
from shared_code_location.asset_keys import IO_MANAGER_KEY, TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY
from shared_code_location.io_manager import PipelineIOManager

training_job = dg.define_asset_job("training_job", selection=[trained_model.key], description="Train the model.")

defs = dg.Definitions(
    assets=[VOCABULARY.spec(), TRAIN_TOKENS.spec(), VALIDATION_TOKENS.spec(), trained_model],
    jobs=[training_job],
    resources={IO_MANAGER_KEY: PipelineIOManager()},
    executor=dg.in_process_executor,
)
