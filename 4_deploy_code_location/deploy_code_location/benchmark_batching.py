"""The batching engine's own rate, without HTTP: what `scripts/load_test.py` measures the server against.

`python -m deploy_code_location.benchmark_batching --release DIR --clients 32 --requests 400 --tokens 50` runs the
server's `Batcher` with N closed-loop clients (each submits one sequence of `--tokens` tokens after "ROMEO:\\n", waits
for it to end, submits the next, as the load test's clients do) and prints one JSON line:

- `engine_tokens_per_second`: the batcher alone (sampling, the ONNX step, bookkeeping);
- `loop_tokens_per_second`: the same through the server's asyncio hand-over (`DecodingJob` on an event loop, one
  wake-up per step) and its stream chunks written as bytes, no sockets: what the HTTP path adds before HTTP;
- CPU seconds per token of the decoding thread and of the event loop in the second run.

With `--regex`, every request's text is constrained to that regex (structured output, each request compiling its
grammar as the server does), held to `--tokens` tokens by `min_tokens`: the difference in the decoding thread's CPU
per token is the grammar mask's cost; `--mask-cost` measures that cost alone (`sample_rows` with and without the
regex on the same logits, at 1, 8, 32 and 64 rows).

Figures, not a test. No torch imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np

from deploy_code_location.onnx_generator import OnnxGenerator, Sequence
from deploy_code_location.sampling import SamplingParams, sample_rows
from deploy_code_location.serving.batcher import Batcher
from deploy_code_location.serving.choices import ChunkWriter
from deploy_code_location.serving.streams import DecodingJob, LoopWaker
from deploy_code_location.structured_output import Constraint

PROMPT = "ROMEO:\n"


def sampling(tokens: int, regex: str | None) -> SamplingParams:
    """What each request samples with: temperature 1, and with `regex`, that structured output (held to `tokens`
    tokens by `min_tokens`, so that every request writes as many as without it)."""
    if regex is None:
        return SamplingParams(max_tokens=tokens)
    return SamplingParams(max_tokens=tokens, min_tokens=tokens, constraint=Constraint("regex", regex))


def engine_rate(
    generator: OnnxGenerator, clients: int, requests: int, tokens: int, regex: str | None = None
) -> dict[str, float]:
    """Tokens/s of the batcher alone with `clients` closed-loop clients: each sequence that ends submits the next
    from the batcher's own thread, so no client thread competes for the interpreter."""
    batcher = Batcher(max_batch=64)
    ids = list(map(int, generator.tokenizer.encode(PROMPT)))
    params, vocab = sampling(tokens, regex), generator.tokenizer.vocab_size
    grammar = None if params.constraint is None else params.constraint.compile(generator.tokenizer)
    remaining, finished = iter(range(requests)), threading.Event()
    left = [requests]

    def submit_next(_sequence: Sequence | None = None) -> None:
        if _sequence is not None:
            left[0] -= 1
            if not left[0]:
                finished.set()
        index = next(remaining, None)
        if index is not None:
            choose = params.sampler(index, ids, vocab, grammar)
            batcher.submit(generator, [Sequence(list(ids), tokens, choose, on_finish=submit_next)])

    started = time.perf_counter()
    for _ in range(clients):
        submit_next()
    finished.wait()
    wall = time.perf_counter() - started
    cpu = batcher.stats.cpu_seconds
    batcher.stop()
    total = requests * tokens
    return {"engine_tokens_per_second": total / wall, "engine_thread_cpu_us_per_token": 1e6 * cpu / total}


def loop_rate(
    generator: OnnxGenerator, clients: int, requests: int, tokens: int, regex: str | None = None
) -> dict[str, float]:
    """Tokens/s through `DecodingJob` on an event loop, each token written as a stream chunk (bytes), no sockets."""
    params, vocab = sampling(tokens, regex), generator.tokenizer.vocab_size
    waker = LoopWaker()
    batcher = Batcher(max_batch=64, after_step=waker.wake)
    ids = generator.tokenizer.encode(PROMPT)
    writer = ChunkWriter({"id": "cmpl-0", "object": "text_completion", "created": 0, "model": "m",
                          "system_fingerprint": generator.version})  # fmt: skip

    async def run() -> float:
        remaining = iter(range(requests))

        async def client() -> None:
            for index in remaining:
                grammar = None if params.constraint is None else params.constraint.compile(generator.tokenizer)
                choose = params.sampler(index, ids, vocab, grammar)
                job = DecodingJob(batcher, generator, waker, [(ids, choose)], tokens, min_tokens=params.min_tokens)
                job.start()
                async for items in job.updates():
                    b"".join(writer.event(f'{{"text":{json.dumps(p.text)}}}') for _, p in items if p is not None)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started

    cpu_before = time.thread_time()
    wall = asyncio.run(run())
    loop_cpu = time.thread_time() - cpu_before
    engine_cpu = batcher.stats.cpu_seconds
    batcher.stop()
    total = requests * tokens
    return {"loop_tokens_per_second": total / wall, "loop_thread_cpu_us_per_token": 1e6 * loop_cpu / total,
            "loop_engine_thread_cpu_us_per_token": 1e6 * engine_cpu / total}  # fmt: skip


def mask_cost(generator: OnnxGenerator, regex: str, steps: int = 400) -> dict[int, dict[str, float]]:
    """The grammar mask's own cost in `sample_rows`, µs of CPU per token, at 1, 8, 32 and 64 rows: the same random
    logits sampled with `regex` (held open by `min_tokens`) and without, the least of three runs each."""
    vocab, prompt = generator.tokenizer.vocab_size, generator.tokenizer.encode(PROMPT).tolist()
    grammar = Constraint("regex", regex).compile(generator.tokenizer)
    rng, figures = np.random.default_rng(0), {}

    def per_token(rows: int, constrained: bool) -> float:
        params = SamplingParams(seed=1, min_tokens=10**6 if constrained else 0)
        samplers = [params.sampler(i, prompt, vocab, grammar if constrained else None) for i in range(rows)]
        logits = rng.normal(0, 2, size=(steps, rows, vocab)).astype(np.float32)
        started = time.thread_time()
        for step in range(steps):
            sample_rows(logits[step], samplers)
        return 1e6 * (time.thread_time() - started) / (steps * rows)

    for rows in (1, 8, 32, 64):
        plain = min(per_token(rows, False) for _ in range(3))
        constrained = min(per_token(rows, True) for _ in range(3))
        figures[rows] = {"plain_us": plain, "grammar_us": constrained, "mask_us": constrained - plain}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, help="release folder")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--regex", help="structured output: every request's text matches this regex")
    parser.add_argument("--mask-cost", action="store_true", help="only the mask's cost per token (needs --regex)")
    args = parser.parse_args()
    generator = OnnxGenerator(Path(args.release))
    if args.mask_cost:
        print(json.dumps(mask_cost(generator, args.regex)))
        return
    np.random.default_rng(0)
    figures = {"clients": args.clients}
    figures |= engine_rate(generator, args.clients, args.requests, args.tokens, args.regex)
    figures |= loop_rate(generator, args.clients, args.requests, args.tokens, args.regex)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
