"""`deploy/serving_latency`: what a token of the latest release costs in ONNX Runtime, measured after each release.

A step declared in YAML (`defs/serving_latency/defs.yaml`, Dagster's `FunctionComponent`): the YAML names this
function, the asset it produces, what it depends on and when it runs; this module holds only the work.
"""

import dagster as dg

from deploy_code_location.benchmark_latency import ort_ms_per_token
from shared_code_location.contract.resources import OutputFolderResource

#: Tokens generated for the measurement: enough to cross a cache slide on small blocks.
MEASURED_TOKENS = 200


def measure_serving_latency(context: dg.AssetExecutionContext, output_folder: OutputFolderResource):
    """Load the release `latest.json` points at and time generation at batch 1 (no torch in this path)."""
    from deploy_code_location.release_store import resolve_release

    folder = resolve_release(output_folder.path)
    figures = ort_ms_per_token(folder, MEASURED_TOKENS, "ROMEO:\n")
    context.log.info(f"{folder.name}: {figures['ms_per_token']:.2f} ms/token")
    return dg.MaterializeResult(
        metadata={
            "release": folder.name,
            "ms_per_token": dg.MetadataValue.float(figures["ms_per_token"]),
            "ms_per_decode_step_at_full_context": dg.MetadataValue.float(figures["ms_per_decode_step_at_full_context"]),
            "ms_per_prefill_of_a_full_block": dg.MetadataValue.float(figures["ms_per_prefill_of_a_full_block"]),
        }
    )
