"""The 3_evaluate code location."""

import dagster as dg

from evaluate_code_location import checks
from evaluate_code_location.evaluation_report import evaluation_report
from shared_code_location.asset_keys import TEST_TOKENS, TRAIN_TOKENS, TRAINED_MODEL, VOCABULARY
from shared_code_location.automation import automation_sensor
from shared_code_location.resources import pipeline_resources

defs = dg.Definitions(
    assets=[TRAINED_MODEL.spec(), VOCABULARY.spec(), TRAIN_TOKENS.spec(), TEST_TOKENS.spec(), evaluation_report],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    sensors=[automation_sensor("3_evaluate")],
    resources=pipeline_resources(),
    executor=dg.in_process_executor,
)
