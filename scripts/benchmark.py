"""Benchmarks (figures, not pass/fail): `python scripts/benchmark.py [--pipeline]`, after `cli.py run`.

Prints:
- with --pipeline: end-to-end wall time of `cli.py run` (quick preset) and the validation loss in its model card;
- training tokens/s inside `train()` (what the asset runs) against a bare loop over the same model, same process;
- per-token generation latency at batch 1: ONNX Runtime (in a process without torch, the server's decoding) against
  PyTorch eager, both the full-context loop and the same key/value-cache decoding.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORAGE = Path(os.environ.get("ML_PIPELINE_STORAGE_URI", ROOT / "example_persistent_home" / "asset_storage"))
OUTPUT = Path(os.environ.get("ML_PIPELINE_OUTPUT_DIR", ROOT / "example_output_resources"))


def venv_json(location: str, *args: str) -> dict:
    python = ROOT / location / ".venv" / "bin" / "python"
    output = subprocess.run([str(python), *args], cwd=ROOT / location, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="store_true", help="also time `cli.py run` end to end (quick preset)")
    parser.add_argument("--train-iters", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=500)
    args = parser.parse_args()

    if args.pipeline:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "cli.py"), "run"], check=True)
        wall = time.perf_counter() - start
        pointer = json.loads((OUTPUT / "latest.json").read_text())
        card = json.loads((OUTPUT / pointer["path"] / "model_card.json").read_text())
        print(
            f"pipeline (quick preset): {wall:.1f} s end to end; "
            f"validation loss {card['training']['validation_loss']:.4f}, test loss "
            f"{card['metrics']['model']['loss']:.4f} (bigram {card['metrics']['baselines']['bigram']['loss']:.4f})"
        )

    if not (STORAGE / "etl" / "train_tokens.npy").exists():
        sys.exit("no ETL output yet: run `python scripts/cli.py run` first")
    throughput = venv_json(
        "2_model_code_location",
        "-m",
        "model_code_location.benchmark_throughput",
        "--storage",
        str(STORAGE),
        "--iters",
        str(args.train_iters),
    )
    print(
        f"training (quick preset shapes, {throughput['threads']} threads): "
        f"asset {throughput['asset_tokens_per_second']:,.0f} tokens/s, bare loop "
        f"{throughput['bare_tokens_per_second']:,.0f} tokens/s, ratio {throughput['ratio']:.3f} (goal >= 0.95)"
    )

    pointer = json.loads((OUTPUT / "latest.json").read_text())
    release = OUTPUT / pointer["path"]
    ort = venv_json(
        "4_deploy_code_location",
        "-m",
        "deploy_code_location.benchmark_latency",
        "ort",
        "--release",
        str(release),
        "--tokens",
        str(args.tokens),
    )
    eager = venv_json(
        "4_deploy_code_location",
        "-m",
        "deploy_code_location.benchmark_latency",
        "torch",
        "--weights",
        str(STORAGE / "model" / "trained_model.safetensors"),
        "--tokens",
        str(args.tokens),
    )
    print(
        f"generation, batch 1, {args.tokens} tokens, release {pointer['version']} (goal <= 0.5 ms/token, >= 2.5x):\n"
        f"  ONNX Runtime, key/value cache   {ort['ms_per_token']:.3f} ms/token (torch loaded: {ort['torch_loaded']}); "
        f"one decode step at full context {ort['ms_per_decode_step_at_full_context']:.3f} ms, "
        f"one full-block prefill {ort['ms_per_prefill_of_a_full_block']:.3f} ms\n"
        f"  PyTorch eager, full context     {eager['ms_per_token_full_context']:.3f} ms/token "
        f"-> ONNX Runtime {eager['ms_per_token_full_context'] / ort['ms_per_token']:.2f}x faster\n"
        f"  PyTorch eager, key/value cache  {eager['ms_per_token_cached']:.3f} ms/token "
        f"-> ONNX Runtime {eager['ms_per_token_cached'] / ort['ms_per_token']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
