"""`torch.compile` for training, where it pays: which runs compile (`decide`), how (the repeated block, compiled
once: regional compilation), the evaluation that never recompiles, the caches kept between runs, and the clear
failure when compiling breaks.

The `auto` rule, from measurements (docs/figures.md has them, and `scripts/benchmark_training.py` measures them
again): compiling costs a warm-up before the first step and then makes every step faster, so it pays only when the
run is long enough. On the CPU, never: the first compiled call of even the tiny model takes ~28 s here (inductor and
gcc), more than the CPU presets save in their whole run. On MPS, never (inductor's Metal backend is young). On CUDA,
`auto` estimates the run's eager seconds from its FLOPs (`EAGER_FLOPS_PER_SECOND`) and compiles when the time the
compiled steps save (`COMPILED_SPEEDUP`) beats the warm-up of a compile from the cache: the one measured the last
time this shape started from the cache folder (`ML_PIPELINE_COMPILE_CACHE`), else `WARM_WARMUP_SECONDS`. The cache
outlives the run, so a shape pays its cold compile once per cache folder (the first run's warm-up is longer) and
every later run starts warm; a run too short to earn back even a warm start trains eager.

Imports torch: import it where training runs, not when a location loads.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared_code_location.model.transformer import DecoderTransformer

#: How a user turns compiling off, named in every compile failure.
HOW_TO_TURN_OFF = (
    'set compile to "off" (the experiment\'s `overrides: {compile: "off"}`, `cli.py run --set compile=off`, or '
    "`compile` in the run's config) to train eager"
)

# The `auto` rule's figures, measured on one H200 (PyTorch 2.11, CUDA 13; docs/figures.md). Retune them from
# `scripts/benchmark_training.py --device cuda` on your GPU.
#: Compiled training steps against eager ones, same shape (1.30-1.45x measured: the low end).
COMPILED_SPEEDUP = 1.3
#: Model FLOP/s of eager training on CUDA, to estimate a run's eager seconds before it starts: train() at batch 256
#: ran 2.62 M tokens/s of the gpu preset's model, 7.1e7 FLOP per token (`flops_per_token`).
EAGER_FLOPS_PER_SECOND = 1.8e14
#: Warm-up of the first compiled step (the block's forward and backward) when its shape is in the cache.
WARM_WARMUP_SECONDS = 5.0
#: The file in the cache folder that records each compiled shape's last measured warm-ups, cold and warm.
_WARMUPS_FILE = "ml_pipeline_warmups.json"


class CompileError(RuntimeError):
    """`torch.compile` failed: the message names the cause and the setting that turns compiling off."""


@dataclass(frozen=True)
class Decision:
    """Whether this training compiles, and why (logged, and kept in the run's summary)."""

    compile: bool
    why: str


def flops_per_token(model: DecoderTransformer) -> float:
    """Training FLOPs per token (forward and backward): 6 per weight that multiplies (the position embedding is a
    lookup) plus attention's 12 · layers · block · width (PaLM's appendix B, as nanoGPT counts them)."""
    config = model.config
    weights = model.num_parameters() - model.wpe.weight.numel()
    return 6 * weights + 12 * config.n_layer * config.block_size * config.n_embd


def shape_key(model: DecoderTransformer, hp: dict[str, Any], device: torch.device, world: int) -> str:
    """What a compiled graph depends on: the device, PyTorch's version, the architecture and each rank's batch."""
    config = model.config
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return (
        f"{name}|torch {torch.__version__}|{config.n_layer}x{config.n_embd}/{config.n_head} block {config.block_size}"
        f" vocab {config.vocab_size} batch {hp['batch_size'] // world} dropout {config.dropout}"
    )


def decide(
    hp: dict[str, Any], model: DecoderTransformer, device: torch.device, world: int, cache: Path | None
) -> Decision:
    """Whether to compile: `hp["compile"]` `on` or `off` as it says; `auto` by the rule in the module docstring."""
    setting = hp.get("compile", "off")
    if setting != "auto":
        return Decision(setting == "on", f"compile: {setting}")
    if device.type != "cuda":
        return Decision(False, f"compile auto: off on {device.type} (the warm-up costs more than it saves there)")
    tokens = hp["max_iters"] * hp["batch_size"] * hp["block_size"] / world
    eager_seconds = tokens * flops_per_token(model) / EAGER_FLOPS_PER_SECOND
    saved = eager_seconds * (1 - 1 / COMPILED_SPEEDUP)
    measured = recorded_warmups(cache, shape_key(model, hp, device, world)).get("warm") if cache else None
    warmup = measured if measured is not None else WARM_WARMUP_SECONDS
    source = "measured the last time this shape started from the cache" if measured is not None else "estimated"
    verdict = "on" if saved > warmup else "off"
    return Decision(
        saved > warmup,
        f"compile auto: {verdict}: ~{eager_seconds:.0f} s of eager steps planned, of which compiling saves "
        f"~{saved:.0f} s, against a warm start of ~{warmup:.0f} s ({source}; a shape's first compile costs more, "
        "once per cache folder)",
    )


def compile_blocks(model: DecoderTransformer) -> None:
    """Compile the transformer's block in place (`nn.Module.compile`): the blocks share one compiled graph, so
    the warm-up is one block's, whatever the depth, and the weights keep their plain names (no `_orig_mod.`).
    `fullgraph`: a graph break is an error, not a quiet fall back to eager for part of the block."""
    for block in model.blocks:
        block.compile(fullgraph=True)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly inside the block: evaluation (other shapes, no gradients, eval mode) costs
    milliseconds eager and would otherwise compile a second graph."""
    with torch.compiler.set_stance("force_eager"):
        yield


def use_cache(folder: Path) -> Path:
    """Keep TorchInductor's caches (its FX graphs, autograd graphs and Triton kernels) in `folder`, unless
    `TORCHINDUCTOR_CACHE_DIR` already names one; returns the folder in use. Call before the first compile."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder)))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def recorded_warmups(cache: Path, key: str) -> dict[str, float]:
    """The warm-ups last measured for `key` with `cache`: `cold` (its first compile), `warm` (from the cache)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        return dict(json.loads((cache / _WARMUPS_FILE).read_text())[key])
    return {}


def record_warmup(cache: Path, key: str, seconds: float) -> str:
    """Remember `key`'s measured warm-up in `cache` (what `auto` expects next time): as `warm` if the shape had
    compiled with this cache before, else as `cold`. Returns which."""
    path = cache / _WARMUPS_FILE
    kind = "warm" if recorded_warmups(cache, key) else "cold"
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(path.read_text()) if path.exists() else {}
        known[key] = dict(known.get(key) or {}) | {kind: round(seconds, 2)}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(known, indent=1, sort_keys=True))
        temporary.replace(path)  # atomic: ranks and runs sharing the folder never read half a file
    return kind


def as_compile_error(error: BaseException) -> CompileError | None:
    """A `CompileError` for an error that `torch.compile` raised (dynamo, AOTAutograd, inductor, a missing C
    compiler), else None."""
    if not isinstance(error, torch._dynamo.exc.TorchDynamoException):
        return None
    cause = next((line for line in str(error).strip().splitlines() if line.strip()), type(error).__name__)
    return CompileError(f"torch.compile failed: {type(error).__name__}: {cause[:500]}; {HOW_TO_TURN_OFF}")
