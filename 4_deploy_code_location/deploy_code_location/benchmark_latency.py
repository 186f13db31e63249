"""Per-token generation latency at batch 1: ONNX Runtime (this process must not import torch) or PyTorch eager.

`python -m deploy_code_location.benchmark_latency ort --release DIR` or `... torch --weights FILE`. Prints JSON.
Both decode the same way: the full context (cropped to the block size) each step, plus sampling.
"""

import argparse
import json
import sys
import time


def ort_ms_per_token(release: str, tokens: int, prompt: str) -> dict:
    from deploy_code_location.onnx_generator import OnnxGenerator

    generator = OnnxGenerator(release)
    generator.generate(prompt, 20, seed=0)  # warm up
    result = generator.generate(prompt, tokens, seed=0)
    return {
        "runtime": "onnxruntime",
        "ms_per_token": 1000 * result.seconds / tokens,
        "torch_loaded": "torch" in sys.modules,
    }


def torch_ms_per_token(weights: str, tokens: int, prompt_length: int) -> dict:
    import torch

    from shared_code_location.storage_formats import StorageFormat, decode
    from shared_code_location.transformer import from_tensor_bundle

    with open(weights, "rb") as handle:
        model = from_tensor_bundle(decode(StorageFormat.SAFETENSORS, handle.read()))
    idx = torch.ones((1, prompt_length), dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        model.generate(idx, 20, generator=generator)
        start = time.perf_counter()
        model.generate(idx, tokens, generator=generator)
    return {
        "runtime": "torch eager",
        "ms_per_token": 1000 * (time.perf_counter() - start) / tokens,
        "threads": torch.get_num_threads(),
    }


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
