"""The shared IO manager and the output folder, the automation sensor, and one process per run."""

import dagster as dg

from shared_code_location.contract.resources import pipeline_resources
from shared_code_location.runtime.automation import automation_sensor


@dg.definitions
def resources() -> dg.Definitions:
    """Resources, executor and automation sensor of this location."""
    return dg.Definitions(
        resources=pipeline_resources("output_folder"),
        executor=dg.in_process_executor,
        sensors=[automation_sensor(__file__)],
    )
