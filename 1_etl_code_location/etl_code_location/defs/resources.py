"""The shared IO manager and the input folder, one process per run, and the automation that combines the files."""

import dagster as dg

from shared_code_location.contract.resources import pipeline_resources
from shared_code_location.runtime.automation import automation_sensor


@dg.definitions
def resources() -> dg.Definitions:
    """Resources, executor and automation sensor of this location. Steps are light: one process saves a Python
    start-up per step. The automation sensor runs the vocabulary and the manifests once every file is ingested."""
    return dg.Definitions(
        resources=pipeline_resources("input_files"),
        executor=dg.in_process_executor,
        sensors=[automation_sensor(__file__)],
    )
