"""The shared IO manager, the Ray cluster of distributed trainings, and one process per run: training is one step."""

import dagster as dg

from model_code_location.ray_cluster import RAY_RESOURCE_KEY, RayCluster
from shared_code_location import settings
from shared_code_location.contract.resources import pipeline_resources


def ray_cluster() -> RayCluster:
    """`ML_PIPELINE_RAY_ADDRESS`'s cluster, bound with `dg.EnvVar` (read when a run starts), where it is set; else
    a local cluster per training."""
    return RayCluster(address=dg.EnvVar(settings.RAY_ADDRESS.name)) if settings.RAY_ADDRESS.get() else RayCluster()


@dg.definitions
def resources() -> dg.Definitions:
    """Resources and executor of every asset in this location."""
    return dg.Definitions(
        resources=pipeline_resources() | {RAY_RESOURCE_KEY: ray_cluster()}, executor=dg.in_process_executor
    )
