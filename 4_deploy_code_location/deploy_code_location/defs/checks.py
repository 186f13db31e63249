"""Blocking checks in front of the release: ONNX parity with PyTorch, and the written release really serving."""

import dagster as dg

from deploy_code_location.defs.leaderboard import LEADERBOARD_KEY
from deploy_code_location.defs.release import ONNX_MODEL_KEY, RELEASE_KEY, winning_model
from deploy_code_location.defs.smoke_test import SMOKE_PROMPT
from shared_code_location.asset_keys import IO_MANAGER_KEY
from shared_code_location.resources import OutputFolderResource
from shared_code_location.storage import storage_errors
from shared_code_location.storage_formats import sha256_hex

#: Largest |ONNX Runtime − PyTorch| logit difference accepted on any parity shape.
PARITY_TOLERANCE = 1e-4
#: Tokens the release check generates from the smoke test's prompt: enough to cross a cache slide on small blocks.
RELEASE_CHECK_TOKENS = 50


@dg.asset_check(
    asset=ONNX_MODEL_KEY,
    additional_ins={"leaderboard": dg.AssetIn(key=LEADERBOARD_KEY)},
    required_resource_keys={IO_MANAGER_KEY},
    blocking=True,
)
def onnx_matches_pytorch(
    context: dg.AssetCheckExecutionContext, onnx_model: bytes, leaderboard: dict
) -> dg.AssetCheckResult:
    """ONNX Runtime's logits equal PyTorch's (the winning experiment's weights) within 1e-4 on several (batch,
    sequence) shapes."""
    from deploy_code_location.onnx_export import max_logit_difference
    from shared_code_location.transformer import from_tensor_bundle

    differences = max_logit_difference(from_tensor_bundle(winning_model(context, leaderboard)), onnx_model)
    worst = max(differences.values())
    return dg.AssetCheckResult(
        passed=worst <= PARITY_TOLERANCE,
        metadata={
            "max_abs_difference": worst,
            "tolerance": PARITY_TOLERANCE,
            "by_shape": dg.MetadataValue.json(differences),
        },
    )


@dg.asset_check(asset=RELEASE_KEY, blocking=True)
def release_loads_and_generates(output_folder: OutputFolderResource, release: dict) -> dg.AssetCheckResult:
    """The release as written (a folder, or in object storage) matches its sha256, loads in ONNX Runtime and
    generates text."""
    from deploy_code_location.onnx_generator import OnnxGenerator
    from deploy_code_location.release_store import resolve_release

    folder = resolve_release(output_folder.path, release["version"])
    with storage_errors(folder):
        sha_ok = sha256_hex((folder / "model.onnx").read_bytes()) == release["model_sha256"]
    tokens = RELEASE_CHECK_TOKENS
    generation = OnnxGenerator(folder).generate(SMOKE_PROMPT, max_new_tokens=tokens, temperature=0.8, seed=0)
    return dg.AssetCheckResult(
        passed=sha_ok and generation.tokens == tokens and len(generation.text) == tokens,
        metadata={
            "sha256_matches": sha_ok,
            "sample": generation.text,
            "ms_per_token": 1000 * generation.seconds / tokens,
        },
    )
