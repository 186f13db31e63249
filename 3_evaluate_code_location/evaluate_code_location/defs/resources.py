"""The shared IO manager, the automation sensor, and one process per run."""

import dagster as dg

from shared_code_location.contract.resources import pipeline_resources
from shared_code_location.runtime.automation import automation_sensor


@dg.definitions
def resources() -> dg.Definitions:
    """Resources, executor and automation sensor of this location."""
    return dg.Definitions(
        resources=pipeline_resources(), executor=dg.in_process_executor, sensors=[automation_sensor(__file__)]
    )
