"""Benchmarks (figures, not pass/fail): `python scripts/benchmark.py [--pipeline]`, after `cli.py run`.

Prints:
- with --pipeline: end-to-end wall time of `cli.py run` (every experiment) and the released model card's losses;
- training: `scripts/benchmark_training.py --device cpu` in the model location's venv (train() against a bare loop,
  eager and compiled, MFU, compile warm-up, seconds to a validation loss; its table);
- per-token generation latency at batch 1: ONNX Runtime (in a process without torch, the server's decoding) against
  PyTorch eager, both the full-context loop and the same key/value-cache decoding.
"""

import argparse
import json
import subprocess
import sys
import time

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from pipeline_cli.locations import LOCATIONS, Environment  # noqa: E402
from shared_code_location import settings  # noqa: E402

STORAGE = settings.storage_uri()  # a folder or a URI (s3://...): the location modules open it with UPath
OUTPUT = settings.OUTPUT_DIR.path()


def location_with(module: str) -> Environment:
    """The location whose package holds `module` (e.g. benchmark_latency.py)."""
    return next(env for env in LOCATIONS if (env.path / env.package / f"{module}.py").is_file())


def venv_json(module: str, *args: str) -> dict:
    """Run `python -m <package>.<module> ARGS` in the venv of the location that has it; its last line as JSON."""
    env = location_with(module)
    command = [str(env.python), "-m", f"{env.package}.{module}", *args]
    output = subprocess.run(command, cwd=env.path, capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"{env.name}: {module} failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="store_true", help="also time `cli.py run` end to end (every experiment)")
    parser.add_argument("--train-steps", type=int, default=100, help="timed steps per training throughput figure")
    parser.add_argument("--tokens", type=int, default=500)
    args = parser.parse_args()

    if args.pipeline:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "cli.py"), "run"], check=True)
        wall = time.perf_counter() - start
        pointer = json.loads((OUTPUT / "latest.json").read_text())
        card = json.loads((OUTPUT / pointer["path"] / "model_card.json").read_text())
        print(
            f"pipeline (every experiment, released {card['experiment']['name']}): {wall:.1f} s end to end; "
            f"validation loss {card['training']['validation_loss']:.4f}, test loss "
            f"{card['metrics']['model']['loss']:.4f} (bigram {card['metrics']['baselines']['bigram']['loss']:.4f})"
        )

    if not (OUTPUT / "latest.json").exists():
        sys.exit(f"no release in {OUTPUT} yet: run `python scripts/cli.py run` first")
    model = location_with("training")
    training = [str(model.python), str(ROOT / "scripts" / "benchmark_training.py"), "--device", "cpu"]
    subprocess.run([*training, "--steps", str(args.train_steps)], check=True)

    pointer = json.loads((OUTPUT / "latest.json").read_text())
    release = OUTPUT / pointer["path"]
    ort = venv_json("benchmark_latency", "ort", "--release", str(release), "--tokens", str(args.tokens))
    # The released experiment's weights: one file per experiment (partition).
    experiment = json.loads((release / "model_card.json").read_text())["experiment"]["name"]
    weights = f"{STORAGE.rstrip('/')}/model/trained_model/{experiment}.safetensors"
    eager = venv_json("benchmark_latency", "torch", "--weights", weights, "--tokens", str(args.tokens))
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
