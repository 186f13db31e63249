"""The 4_deploy code location."""

import dagster as dg

from deploy_code_location import checks
from deploy_code_location.release import latest_release, onnx_model, release
from deploy_code_location.smoke_test import release_smoke_test_job, release_smoke_test_schedule
from shared_code_location.asset_keys import EVALUATION_REPORT, TRAINED_MODEL, VOCABULARY
from shared_code_location.automation import automation_sensor
from shared_code_location.resources import pipeline_resources

defs = dg.Definitions(
    assets=[TRAINED_MODEL.spec(), VOCABULARY.spec(), EVALUATION_REPORT.spec(), onnx_model, release, latest_release],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[release_smoke_test_job],
    schedules=[release_smoke_test_schedule],
    sensors=[automation_sensor("4_deploy")],
    resources=pipeline_resources("output_folder"),
    executor=dg.in_process_executor,
)
