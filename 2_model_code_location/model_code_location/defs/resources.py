"""The shared IO manager, and one process per run: training is one step."""

import dagster as dg

from shared_code_location.resources import pipeline_resources


@dg.definitions
def resources() -> dg.Definitions:
    """Resources and executor of every asset in this location."""
    return dg.Definitions(resources=pipeline_resources(), executor=dg.in_process_executor)
