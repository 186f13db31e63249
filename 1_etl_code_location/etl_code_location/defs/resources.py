"""The shared IO manager and the input folder, and one process per run."""

import dagster as dg

from shared_code_location.contract.resources import pipeline_resources


@dg.definitions
def resources() -> dg.Definitions:
    """Resources and executor of this location. Steps are light: one process saves a Python start-up per step. The
    IO manager also stores the op outputs inside the graph-backed corpus asset: pickle-free everywhere."""
    return dg.Definitions(resources=pipeline_resources("input_files"), executor=dg.in_process_executor)
