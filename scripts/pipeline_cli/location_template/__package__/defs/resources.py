"""The shared IO manager (every value this location stores goes through it), and one process per run."""

import dagster as dg

from shared_code_location.contract.resources import pipeline_resources


@dg.definitions
def resources() -> dg.Definitions:
    """Resources and executor of every asset in this location."""
    return dg.Definitions(resources=pipeline_resources(), executor=dg.in_process_executor)
