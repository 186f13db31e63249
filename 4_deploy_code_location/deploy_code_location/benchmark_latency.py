"""Per-token generation latency at batch 1: ONNX Runtime (this process must not import torch) or PyTorch eager.

`python -m deploy_code_location.benchmark_latency ort --release DIR` or `... torch --weights FILE`. Prints JSON.
The ONNX Runtime figure is the serving path: key/value cache, sliding half-block window, NumPy sampling. PyTorch
eager is measured two ways on the same weights: `DecoderTransformer.generate` (the whole context recomputed for
every token, the textbook loop) and the same cached decoding as the server.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def ort_ms_per_token(release: "str | Path", tokens: int, prompt: str) -> dict:
    """Milliseconds per generated token at batch 1 on ONNX Runtime, for the release folder (or URI) `release`."""
    from deploy_code_location.onnx_generator import OnnxGenerator

    generator = OnnxGenerator(release)
    generator.generate(prompt, 20, seed=0)  # warm up
    result = generator.generate(prompt, tokens, seed=0)
    # One decode step and one prefill at the block size, alone: what a token costs with a short and a full context.
    ids = generator.tokenizer.encode(prompt * generator.block_size)[: generator.block_size]
    _, cache = generator.prefill(ids[:-1])
    token, position, mask = np.array([ids[-1]]), np.array([len(ids) - 1]), np.ones((1, len(ids) - 1), bool)
    return {
        "runtime": "onnxruntime",
        "ms_per_token": 1000 * result.seconds / tokens,
        "ms_per_decode_step_at_full_context": _ms(lambda: generator.step(token, position, cache, mask)),
        "ms_per_prefill_of_a_full_block": _ms(lambda: generator.prefill(ids)),
        "torch_loaded": "torch" in sys.modules,
    }


def _ms(call, repeats: int = 200) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return 1000 * (time.perf_counter() - start) / repeats


def torch_ms_per_token(weights: str, tokens: int, prompt_length: int) -> dict:
    import torch
    from upath import UPath

    from shared_code_location.contract.storage_formats import StorageFormat, decode
    from shared_code_location.model.transformer import from_tensor_bundle, sample_next_token

    model = from_tensor_bundle(decode(StorageFormat.SAFETENSORS, UPath(weights).read_bytes()))
    block = model.config.block_size
    keep = max(1, block // 2)

    def cached_generate(idx: torch.Tensor, steps: int, generator: torch.Generator) -> None:
        # The server's decoding (see OnnxGenerator.decode), in PyTorch.
        logits, cache = model.forward_cached(idx[:, -block:], model.empty_cache())
        for _ in range(steps):
            next_id = sample_next_token(logits[:, -1], 1.0, None, generator)
            idx = torch.cat([idx, next_id], dim=1)
            if cache.shape[4] < block:
                logits, cache = model.forward_cached(next_id, cache)
            else:
                logits, cache = model.forward_cached(idx[:, -keep:], model.empty_cache())

    idx = torch.ones((1, prompt_length), dtype=torch.long)
    results = {"runtime": "torch eager", "threads": torch.get_num_threads()}
    for name, run in (("ms_per_token_full_context", model.generate), ("ms_per_token_cached", cached_generate)):
        generator = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            run(idx, 20, generator=generator)
            start = time.perf_counter()
            run(idx, tokens, generator=generator)
        results[name] = 1000 * (time.perf_counter() - start) / tokens
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runtime", choices=["ort", "torch"])
    parser.add_argument("--release")
    parser.add_argument("--weights")
    parser.add_argument("--tokens", type=int, default=500)
    args = parser.parse_args()
    prompt = "ROMEO:\n"
    if args.runtime == "ort":
        print(json.dumps(ort_ms_per_token(args.release, args.tokens, prompt)))
    else:
        print(json.dumps(torch_ms_per_token(args.weights, args.tokens, len(prompt))))


if __name__ == "__main__":
    main()
