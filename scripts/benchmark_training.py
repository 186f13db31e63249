"""Training speed, in one process: train() against a bare loop of the same shape, MFU, compile warm-up, and seconds
to a target validation loss with the gpu preset (CUDA) or the tiny one (CPU).

Needs PyTorch and NumPy only (no Dagster, no project venv), so that it runs as it is on a GPU machine:

    PYTHONPATH=shared_code_location:2_model_code_location python3 scripts/benchmark_training.py --device cuda --out DIR
    2_model_code_location/.venv/bin/python scripts/benchmark_training.py --device cpu            # the CPU table
    2_model_code_location/.venv/bin/python scripts/benchmark_training.py --device cpu --smoke    # seconds, eager

It tokenises example_input_files_resource/tinyshakespeare.txt itself, as the ETL does (train 0.9, validation 0.05,
each cut moved to the next line start; the vocabulary of the train split). Each section is timed and guarded: one
that fails records its error and the next runs. Progress is printed as it goes; the figures are written to
DIR/benchmark_training.json after every section (a run stopped at its time limit keeps what it measured) and printed
as a table at the end. `--budget` (seconds) skips the sections that would not fit.

Sections: the device's peak (a bf16 matrix product on CUDA, fp32 on the CPU; H100/H200 SXM datasheet: 989 TFLOP/s
dense bf16); no host sync inside the step loop (CUDA: train() under `torch.cuda.set_sync_debug_mode("error")`);
the preset end to end, eager, then compiled from an empty cache, then compiled from that cache in a fresh process
(seconds to the target counted from the first step, compiling included; best whole-split validation loss; where
early stopping stopped); tokens/s of train() and of a bare loop, eager and compiled, once warm, and MFU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _package in ("2_model_code_location", "shared_code_location"):
    if str(ROOT / _package) not in sys.path:
        sys.path.insert(0, str(ROOT / _package))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from model_code_location import compilation  # noqa: E402
from model_code_location.hyperparameters import hyperparameters  # noqa: E402
from model_code_location.training import batch_sampler, make_optimizer, train  # noqa: E402
from shared_code_location.model.tokenizer import CharTokenizer  # noqa: E402
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig, autocast  # noqa: E402

CORPUS = ROOT / "example_input_files_resource" / "tinyshakespeare.txt"
#: Dense bf16 of the SXM parts by their datasheets (H200: the H100's processor).
DATASHEET_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}
#: What each device's run trains, and the validation loss it races to.
PRESET = {"cuda": "gpu", "cpu": "tiny"}
TARGET = {"cuda": 1.40, "cpu": 2.5}
_TOKENS_PER_SECOND = re.compile(r"^step (\d+)/\d+: .* ([\d,]+) tokens/s$")
_VALIDATION = re.compile(r"^step (\d+): validation loss ([\d.]+)")
_COMPILED = re.compile(r"^step \d+: compiled, the first step took ([\d.]+) s \((cold|warm) cache")


def say(line: str) -> None:
    print(line, flush=True)


class Report:
    """The figures, section by section, written to `out` after each one; errors recorded, never raised."""

    def __init__(self, out: Path, budget: float, strict: bool = True):
        self.out, self.budget, self.strict, self.started = out, budget, strict, time.perf_counter()
        self.figures: dict[str, Any] = {"errors": {}, "skipped": [], "seconds": {}}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    @contextlib.contextmanager
    def section(self, name: str, needs: float = 0.0):
        """Run the block as section `name` if `needs` seconds are left; record its time or its error."""
        if self.strict and self.left() < needs:
            say(f"== {name}: skipped, {self.left():.0f} s of the budget left, it needs ~{needs:.0f}")
            self.figures["skipped"].append(name)
            yield False
            return
        say(f"== {name} ({self.left():.0f} s of the budget left)")
        began = time.perf_counter()
        try:
            yield True
        except Exception as error:  # a section that fails is recorded; the next one runs
            self.figures["errors"][name] = (
                f"{type(error).__name__}: {error}"[:2000] + "\n" + traceback.format_exc()[-3000:]
            )
            say(f"   failed: {type(error).__name__}: {str(error)[:500]}")
        finally:
            self.figures["seconds"][name] = round(time.perf_counter() - began, 1)
            self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "benchmark_training.json").write_text(json.dumps(self.figures, indent=1, default=str))


def corpus_tokens() -> tuple[np.ndarray, np.ndarray, int]:
    """(train ids, validation ids, vocabulary size) of the example corpus, split and encoded as the ETL does."""
    text = CORPUS.read_text(encoding="utf-8")

    def snap(offset: int) -> int:  # as etl's split_boundaries: the cut moves to the next line start
        newline = text.find("\n", offset)
        return len(text) if newline == -1 else newline + 1

    train_end = snap(int(len(text) * 0.9))
    validation_end = max(train_end, snap(int(len(text) * 0.95)))
    tokenizer = CharTokenizer.fit(text[:train_end])
    return tokenizer.encode(text[:train_end]), tokenizer.encode(text[train_end:validation_end]), tokenizer.vocab_size


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak(device: torch.device) -> dict[str, Any]:
    """The device's matrix rate, measured (bf16 on CUDA, fp32 on the CPU), and the datasheet's where known."""
    size, dtype, repeats = (8192, torch.bfloat16, 20) if device.type == "cuda" else (1024, torch.float32, 10)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    measured = 2 * size**3 * repeats / (time.perf_counter() - began)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    datasheet = next((flops for part, flops in DATASHEET_BF16_FLOPS.items() if part in name), None)
    return {"device_name": name, "measured_flops": measured, "datasheet_bf16_flops": datasheet,
            "peak_used": datasheet or measured, "peak_source": "datasheet dense bf16" if datasheet else
            f"measured {'bf16' if device.type == 'cuda' else 'fp32'} {size}^3 matrix product"}  # fmt: skip


def bare_loop(data: tuple, hp: dict, device: torch.device, steps: int, mode: str) -> dict[str, Any]:
    """The least a training step costs at this shape: sample, forward, loss, backward, clip, AdamW, nothing else;
    `mode`: eager, block (the block compiled, as train() does) or model (the whole model compiled)."""
    train_ids, _, vocab = data
    torch.manual_seed(hp["seed"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as train() sets them
    config = TransformerConfig(vocab, hp["block_size"], hp["n_layer"], hp["n_head"], hp["n_embd"], hp["dropout"])
    model = DecoderTransformer(config).to(device)
    if mode == "block":
        compilation.compile_blocks(model)
    elif mode == "model":
        model.compile(fullgraph=True)
    optimizer = make_optimizer(model, hp, device)
    sample = batch_sampler(train_ids, hp["block_size"], hp["batch_size"], hp["seed"], device=device)  # as train()

    def step() -> None:
        x, y = sample()
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()

    began = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - began
    for _ in range(max(3, steps // 5)):  # warm: allocator, kernels' first launches
        step()
    synchronize(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - began
    return {"tokens_per_second": steps * hp["batch_size"] * hp["block_size"] / seconds,
            "first_step_seconds": first, "steps": steps}  # fmt: skip


def train_throughput(data: tuple, hp: dict, device: torch.device, steps: int, compile_: str) -> dict[str, Any]:
    """train()'s own tokens/s once warm: the median of its log intervals after the first (which holds the warm-up).
    No evaluation but the first and last, no checkpoint."""
    interval = max(1, steps // 4)
    params = hp | {"max_iters": 5 * interval, "log_interval": interval, "eval_interval": 10**9, "eval_tokens": 4096,
                   "checkpoint_interval": 0, "patience": 0, "compile": compile_}  # fmt: skip
    lines: list[str] = []
    result = train(*data, params, log=lines.append, device=device)
    rates = [float(m.group(2).replace(",", "")) for line in lines if (m := _TOKENS_PER_SECOND.match(line))]
    return {"tokens_per_second": float(np.median(rates[1:])), "intervals": rates, "steps_per_interval": interval,
            "compiled": result.summary["compiled"], "compile_seconds": result.summary["compile_seconds"]}  # fmt: skip


def preset_run(data: tuple, hp: dict, device: torch.device, target: float) -> dict[str, Any]:
    """The preset end to end through train(): seconds from the first step (compiling included) to the first
    evaluation at or under `target`, the best whole-split validation loss, where and why it stopped."""
    events: list[tuple[float, str]] = []

    def log(line: str) -> None:
        events.append((time.perf_counter(), line))
        if not _TOKENS_PER_SECOND.match(line) or line.startswith("step 50/"):
            say(f"   {line}")

    began = time.perf_counter()
    result = train(*data, hp, log=log, device=device)
    first_step = next(t for t, line in events if line.startswith("training "))
    crossed = next((t for t, line in events if (m := _VALIDATION.match(line)) and float(m.group(2)) <= target), None)
    compiled = next((m for _, line in events if (m := _COMPILED.match(line))), None)
    summary = result.summary
    return {
        "compile": hp["compile"],
        "seconds_to_target": None if crossed is None else crossed - first_step,
        "target": target,
        "wall_seconds_end_to_end": time.perf_counter() - began,
        "seconds_from_first_step_to_stop": summary["wall_seconds"],
        "best_validation_loss": summary["validation_loss"],
        "best_step": summary["best_step"],
        "stopped_step": summary["stopped_step"],
        "stop_reason": summary["stop_reason"],
        "compile_decision": summary["compile_decision"],
        "compile_warmup_seconds": float(compiled.group(1)) if compiled else None,
        "compile_cache": compiled.group(2) if compiled else None,
        "tokens_per_second": summary["tokens_per_second"],
        "validation_curve": result.history["validation_loss"],
    }


def in_child(args: argparse.Namespace, extra: list[str], timeout: float) -> dict[str, Any]:
    """This script in a fresh process (`--child`): its one JSON line. A fresh process has no in-memory compile
    cache, as a new run has none: what a warm start costs a user."""
    command = [sys.executable, __file__, "--device", args.device, "--out", str(args.out), *extra]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    for line in done.stdout.splitlines()[:-1]:
        say(f"   | {line}")
    if done.returncode:
        raise RuntimeError(f"child exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sync_free_steps(data: tuple, hp: dict, device: torch.device, compile_: str) -> dict[str, Any]:
    """train() under CUDA's sync debug mode "error": any synchronisation inside the step loop raises."""
    params = hp | {"max_iters": 30, "eval_interval": 15, "log_interval": 10, "checkpoint_interval": 0,
                   "compile": compile_}  # fmt: skip
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = train(*data, params, log=lambda _: None, device=device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return {"steps": 30, "synchronising_calls_in_the_loop": 0, "compiled": result.summary["compiled"]}


def table(figures: dict[str, Any]) -> str:
    """The figures that matter, as the markdown rows docs/figures.md takes."""
    rows = ["| what | figure |", "|---|---|"]
    through = figures.get("throughput", {})
    for name in ("bare_eager", "train_eager", "bare_compiled_block", "train_compiled", "bare_compiled_model"):
        if name in through:
            entry = through[name]
            mfu = entry.get("mfu")
            rows.append(f"| {name.replace('_', ' ')} tokens/s | {entry['tokens_per_second']:,.0f}"
                        f"{f' (MFU {mfu:.1%})' if mfu is not None else ''} |")  # fmt: skip
    for name in ("train_vs_bare_eager", "train_vs_bare_compiled"):
        if name in through:
            rows.append(f"| {name.replace('_', ' ')} | {through[name]:.2f}x |")
    for name, run in figures.get("preset_runs", {}).items():
        to_target, warmup = run["seconds_to_target"], run["compile_warmup_seconds"]
        reached = "not reached" if to_target is None else f"{to_target:.1f} s"
        rows.append(
            f"| {name}: to {run['target']} | {reached}; best {run['best_validation_loss']:.4f} at step "
            f"{run['best_step']}, stopped at {run['stopped_step']}; {run['wall_seconds_end_to_end']:.1f} s end to "
            f"end; compile warm-up {'none' if warmup is None else f'{warmup:.1f} s'} |"
        )
    if "peak" in figures:
        peak_ = figures["peak"]
        rows.append(f"| peak used for MFU | {peak_['peak_used'] / 1e12:.1f} TFLOP/s ({peak_['peak_source']}) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "benchmark_training")
    parser.add_argument("--budget", type=float, default=None, help="seconds (default: 300 on CUDA, 900 on the CPU)")
    parser.add_argument("--smoke", action="store_true", help="a few eager steps of a tiny shape: seconds, for CI")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per throughput figure")
    parser.add_argument("--child", choices=("preset",), help=argparse.SUPPRESS)
    parser.add_argument("--compile", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.cache)
    data = corpus_tokens()
    target = TARGET[args.device]
    hp = hyperparameters(PRESET[args.device], device=args.device)
    if args.smoke:
        hp |= {"max_iters": 60, "eval_interval": 20, "log_interval": 20, "eval_tokens": 4096}
    if args.child == "preset":
        print(json.dumps(preset_run(data, hp | {"compile": args.compile}, device, target), default=str), flush=True)
        return

    report = Report(args.out, args.budget or (300 if args.device == "cuda" else 900), strict=not args.smoke)
    figures = report.figures
    figures |= {"device": args.device, "torch": torch.__version__, "preset": PRESET[args.device], "smoke": args.smoke,
                "hyperparameters": hp, "train_tokens": len(data[0]), "validation_tokens": len(data[1])}  # fmt: skip
    say(f"torch {torch.__version__} on {args.device}; {len(data[0]):,} train and {len(data[1]):,} validation tokens")
    flops = compilation.flops_per_token(
        DecoderTransformer(TransformerConfig(data[2], hp["block_size"], hp["n_layer"], hp["n_head"], hp["n_embd"]))
    )
    figures["flops_per_token"] = flops
    caches = Path(tempfile.mkdtemp(prefix="compile-cache-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(caches)  # empty: the first compile below is a cold one
    compiled_too = not args.smoke

    with report.section("peak", needs=5) as run:
        if run:
            figures["peak"] = peak(device)
            say(f"   {figures['peak']}")
    if args.device == "cuda":
        with report.section("no_sync_in_the_step_loop", needs=15) as run:
            if run:
                figures["no_sync_eager"] = sync_free_steps(data, hp, device, "off")
                say("   eager: no synchronising call inside the step loop (sync debug mode 'error')")
    runs = figures.setdefault("preset_runs", {})
    with report.section("preset_eager", needs=60) as run:
        if run:
            runs["eager"] = preset_run(data, hp | {"compile": "off"}, device, target)
    if compiled_too:
        with report.section("preset_compiled_cold_cache", needs=90) as run:
            if run:
                runs["compiled, cold cache"] = preset_run(data, hp | {"compile": "on"}, device, target)

    # Throughput once warm: the compiled block is in this process's caches by now.
    steps = args.steps or (20 if args.smoke else 200 if args.device == "cuda" else 100)
    through = figures.setdefault("throughput", {})
    seconds = 20 if args.device == "cuda" else 30

    def measure(name: str, needs: float, how) -> None:
        with report.section(f"throughput_{name}", needs=needs) as run:
            if run:
                through[name] = how()
                if "peak" in figures:
                    through[name]["mfu"] = through[name]["tokens_per_second"] * flops / figures["peak"]["peak_used"]
                say(f"   {name}: {through[name]['tokens_per_second']:,.0f} tokens/s")

    measure("bare_eager", seconds, lambda: bare_loop(data, hp, device, steps, "eager"))
    measure("train_eager", seconds, lambda: train_throughput(data, hp, device, steps, "off"))
    if compiled_too:
        measure("bare_compiled_block", seconds, lambda: bare_loop(data, hp, device, steps, "block"))
        measure("train_compiled", seconds, lambda: train_throughput(data, hp, device, steps, "on"))
        with report.section("preset_compiled_warm_cache", needs=75) as run:
            if run:
                extra = ["--child", "preset", "--compile", "on", "--cache", str(caches)]
                runs["compiled, warm cache (new process)"] = in_child(args, extra, timeout=max(30, report.left()))
    if compiled_too and hp["compile"] == "auto":  # the gpu preset: what `auto` decides from what was recorded
        with report.section("preset_as_shipped_warm_cache", needs=75) as run:
            if run:
                extra = ["--child", "preset", "--compile", "auto", "--cache", str(caches)]
                runs["as shipped (compile auto), warm cache"] = in_child(args, extra, report.left())
    if args.device == "cuda" and compiled_too:
        with report.section("no_sync_in_the_step_loop_compiled", needs=20) as run:
            if run:
                figures["no_sync_compiled"] = sync_free_steps(data, hp, device, "on")
                say("   compiled: no synchronising call inside the step loop")
    if compiled_too:  # the reference: the whole model compiled (a cold compile of another graph)
        measure("bare_compiled_model", 3 * seconds, lambda: bare_loop(data, hp, device, steps, "model"))
    for mine, bare, name in (("train_eager", "bare_eager", "train_vs_bare_eager"),
                             ("train_compiled", "bare_compiled_block", "train_vs_bare_compiled")):  # fmt: skip
        if mine in through and bare in through:
            through[name] = through[mine]["tokens_per_second"] / through[bare]["tokens_per_second"]
    figures["compile_warmup_seconds"] = {
        name: run["compile_warmup_seconds"] for name, run in runs.items() if run.get("compile_warmup_seconds")
    }
    eager, compiled = (through.get(name, {}).get("tokens_per_second") for name in ("train_eager", "train_compiled"))
    figures["auto_rule"] = {  # the constants `compile: auto` uses, beside what this run measured
        "compiled_speedup": compilation.COMPILED_SPEEDUP,
        "measured_speedup": compiled / eager if eager and compiled else None,
        "eager_flops_per_second": compilation.EAGER_FLOPS_PER_SECOND,
        "measured_eager_flops_per_second": eager * flops if eager else None,
        "warm_warmup_seconds": compilation.WARM_WARMUP_SECONDS,
    }
    figures["total_seconds"] = round(time.perf_counter() - report.started, 1)
    report.save()
    say("\n" + table(figures))
    failed, skipped = ", ".join(figures["errors"]) or "none", ", ".join(figures["skipped"]) or "none"
    say(f"\n{len(figures['errors'])} section(s) failed: {failed}; skipped: {skipped}; {figures['total_seconds']} s")
    say(f"figures: {args.out / 'benchmark_training.json'}")


if __name__ == "__main__":
    main()
