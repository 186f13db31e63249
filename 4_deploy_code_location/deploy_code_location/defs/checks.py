"""Blocking checks in front of the release: ONNX parity with PyTorch, and the written release really serving."""

import dagster as dg

from deploy_code_location.defs.release import ONNX_MODEL_KEY, RELEASE_KEY
from deploy_code_location.release_checks import PARITY_TOLERANCE
from shared_code_location.contract.resources import OutputFolderResource
from shared_code_location.contract.versions import latest_materialization


@dg.asset_check(asset=ONNX_MODEL_KEY, blocking=True)
def onnx_matches_pytorch(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """ONNX Runtime's logits equal PyTorch's (the winning experiment's weights) within 1e-4 on several (batch,
    sequence) shapes: the differences `deploy/onnx_model` measured when it exported them, which the release's
    model card records too."""
    record = latest_materialization(context.instance, ONNX_MODEL_KEY)
    metadata = record.asset_materialization.metadata if record else {}
    worst = getattr(metadata.get("max_abs_difference"), "value", None)
    by_shape = getattr(metadata.get("parity_by_shape"), "value", {})
    return dg.AssetCheckResult(
        passed=worst is not None and worst <= PARITY_TOLERANCE,
        metadata={
            "max_abs_difference": worst,
            "tolerance": PARITY_TOLERANCE,
            "by_shape": dg.MetadataValue.json(by_shape),
        },
    )


@dg.asset_check(asset=RELEASE_KEY, blocking=True)
def release_loads_and_generates(output_folder: OutputFolderResource, release: dict) -> dg.AssetCheckResult:
    """The release as written (a folder, or in object storage) matches its sha256, loads in ONNX Runtime and
    generates text."""
    from deploy_code_location.release_checks import smoke_generation
    from deploy_code_location.release_store import resolve_release

    smoke = smoke_generation(resolve_release(output_folder.path, release["version"]))
    return dg.AssetCheckResult(
        passed=smoke["sha256_matches"] and smoke["generated"],
        metadata={key: smoke[key] for key in ("sha256_matches", "sample", "ms_per_token")},
    )
