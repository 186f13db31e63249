"""What a release must pass to be served, in one place: its `model.onnx` matches the sha256 of its card, its card
records an ONNX-vs-PyTorch parity within tolerance (measured at export), and it loads in ONNX Runtime and generates.
`deploy/release`'s blocking check and `cli.py releases promote` / `rollback` both use it. No torch, no Dagster, and
nothing heavy at import (the code location imports its constants).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Largest |ONNX Runtime − PyTorch| logit difference accepted on any parity shape.
PARITY_TOLERANCE = 1e-4
#: The prompt of the release checks and the smoke-test job.
SMOKE_PROMPT = "ROMEO:\n"
#: Tokens the release check generates from the smoke prompt: enough to cross a cache slide on small blocks.
RELEASE_CHECK_TOKENS = 50
#: Where a model card records the parity measured at export.
PARITY_KEY = "onnx_parity"


def parity_record(differences: dict[str, float]) -> dict[str, Any]:
    """What a model card records of the parity check: the worst difference, the tolerance, whether it passed."""
    worst = max(differences.values())
    passed = worst <= PARITY_TOLERANCE
    return {"max_abs_difference": worst, "tolerance": PARITY_TOLERANCE, "passed": passed, "by_shape": differences}


def smoke_generation(folder: Path) -> dict[str, Any]:
    """Load the release in ONNX Runtime and generate from the smoke prompt: sha256 match, sample, timing."""
    from deploy_code_location.onnx_generator import OnnxGenerator
    from shared_code_location.contract.storage import storage_errors
    from shared_code_location.contract.storage_formats import sha256_hex

    generator = OnnxGenerator(folder)
    with storage_errors(folder):
        sha_ok = sha256_hex((folder / "model.onnx").read_bytes()) == generator.card["model_sha256"]
    generation = generator.generate(SMOKE_PROMPT, RELEASE_CHECK_TOKENS, temperature=0.8, seed=0)
    return {
        "sha256_matches": sha_ok,
        "generated": generation.tokens == RELEASE_CHECK_TOKENS and len(generation.text) == RELEASE_CHECK_TOKENS,
        "sample": generation.text,
        "ms_per_token": 1000 * generation.seconds / RELEASE_CHECK_TOKENS,
    }


def release_problems(folder: Path) -> list[str]:
    """Why the release in `folder` must not be served (empty when it may): each problem in words."""
    from deploy_code_location.release_store import MANIFEST
    from shared_code_location.contract.storage import storage_errors

    with storage_errors(folder):
        card = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    problems = []
    parity = (card.get("checks") or {}).get(PARITY_KEY)
    if parity is None:
        problems.append(
            "its model card records no ONNX parity check (it was released before parity was recorded); publish the "
            "model again with `python scripts/cli.py run --from 4_deploy --force`"
        )
    elif not parity.get("passed") or parity["max_abs_difference"] > PARITY_TOLERANCE:
        problems.append(
            f"ONNX Runtime differs from PyTorch by {parity['max_abs_difference']:.3g} (tolerance {PARITY_TOLERANCE})"
        )
    try:
        smoke = smoke_generation(folder)
    except Exception as error:  # whatever breaks the load: the operator needs the reason
        problems.append(f"it does not load and generate in ONNX Runtime: {type(error).__name__}: {error}")
    else:
        if not smoke["sha256_matches"]:
            problems.append("model.onnx does not match the sha256 of its model card (changed or damaged)")
        if not smoke["generated"]:
            problems.append(f"it generated {smoke['sample']!r}, not {RELEASE_CHECK_TOKENS} characters")
    return problems
