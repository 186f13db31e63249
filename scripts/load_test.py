"""Load benchmark of the HTTP server against its own batching engine: figures, not a test, on loopback only.

`python scripts/load_test.py --clients 1 8 32 64 --requests 400` starts `cli.py serve` on a free loopback port (or
use `--url` for a running server), then per client count runs, side by side:

- the engine: the server's `Batcher` with the same closed-loop clients and no HTTP, then the same through the
  server's asyncio hand-over and chunk writing without sockets (`deploy_code_location.benchmark_batching`, in the
  deploy venv, on the release the server serves);
- HTTP: N clients, each on a kept-alive connection, streaming /v1/completions one request at a time (`--endpoint
  generate` for /generate), errors, p50/p95 latency, median time to first token, requests/s and tokens/s;

and prints the ratio HTTP / engine and where the CPU went, per token: the server's decoding thread, the rest of the
server (event loop, HTTP, JSON), and this load generator. The load generator is one asyncio loop whose connections
read responses in callbacks, so that it takes as little of the machine's CPU as it can. It stops itself.

`--grammar` runs every client count twice, as above and with structured output (every request's text constrained
to `GRAMMAR_REGEX`, held to the same length by `min_tokens`), and prints what the grammar mask costs per token: the
engine's decoding thread CPU with the grammar less without.
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from pipeline_cli.locations import LOCATIONS  # noqa: E402
from shared_code_location import settings  # noqa: E402
from shared_code_location.runtime.net import free_port, http_ok, wait_until  # noqa: E402

PROMPT = "ROMEO:\n"
#: Structured output for `--grammar`: lines of words, each starting with a capital letter (what the model writes
#: anyway, so that the grammar steers without fighting it; a lexer state per line, word and punctuation).
GRAMMAR_REGEX = r"(?:[A-Z][a-z']*(?:[ ,;:!?.-]+[A-Za-z']+)*[,;:!?.]?\n)+"


class _Connection(asyncio.Protocol):
    """One kept-alive client connection that reads its responses in callbacks (no stream reader, no await per
    chunk): the cheapest way for this process to take in server-sent events, so that it takes little of the CPU."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future | None = None
        self._head, self._tail, self._length, self._start, self._first = b"", b"", None, 0.0, None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def request(self, request: bytes) -> asyncio.Future:
        """Send `request`; the future gives (status, seconds to the first event, seconds to the end)."""
        self.done = asyncio.get_running_loop().create_future()
        self._head, self._tail, self._length, self._first = b"", b"", None, None
        self._start = time.perf_counter()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        if self._length is None:  # still in the headers
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return
            self._head, _, data = self._head.partition(b"\r\n\r\n")
            lower = self._head.lower()
            self._length = (
                int(lower.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in lower else -1
            )
        if self._first is None and b"data: " in data:
            self._first = time.perf_counter() - self._start
        if self._length >= 0:
            self._length -= len(data)
            finished = self._length <= 0
        else:  # chunked: the last chunk ends the response
            self._tail = (self._tail + data)[-16:]
            finished = self._tail.endswith(b"0\r\n\r\n")
        if finished and not self.done.done():
            total = time.perf_counter() - self._start
            status = int(self._head.split(b" ", 2)[1])
            self.done.set_result((status, self._first if self._first is not None else total, total))

    def connection_lost(self, _error) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result((0, 0.0, 0.0))


async def _load(
    url: str, clients: int, requests: int, tokens: int, endpoint: str, model: str | None, grammar: bool
) -> dict:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    if endpoint == "generate":
        path, body = "/generate", {"prompt": PROMPT, "max_new_tokens": tokens}
    else:
        path, body = "/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": tokens, "stream": True}
        if grammar:
            body |= {"structured_outputs": {"regex": GRAMMAR_REGEX}, "min_tokens": tokens}
    latencies, first_tokens, errors = [], [], 0
    remaining = iter(range(requests))

    async def user() -> None:
        nonlocal errors
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, host, int(port))
        for seed in remaining:
            payload = json.dumps(body | {"seed": seed}).encode()
            head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            request = head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
            status, first, seconds = await connection.request(request)
            if status == 200:
                latencies.append(seconds)
                first_tokens.append(first)
            else:
                errors += 1
        connection.transport.close()

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(clients)))
    wall = time.perf_counter() - start

    def quantile(values: list[float], q: int) -> float:
        return 1000 * (statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0])

    return {
        "errors": errors,
        "p50_ms": quantile(latencies, 50),
        "p95_ms": quantile(latencies, 95),
        "ttft_p50_ms": quantile(first_tokens, 50),
        "requests_per_second": len(latencies) / wall,
        "tokens_per_second": len(latencies) * tokens / wall,
        "tokens": len(latencies) * tokens,
    }


def _server_cpu(url: str) -> tuple[float, float]:
    """(process CPU seconds, decoding-thread CPU seconds) of the server, from its /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    value = lambda name: float(next(line.split()[1] for line in lines if line.startswith(name + " ")))  # noqa: E731
    return value("process_cpu_seconds_total"), value("decode_thread_cpu_seconds")


def run_http(
    url: str, clients: int, requests: int, tokens: int, endpoint: str, model: str | None, grammar: bool = False
) -> dict:
    """One HTTP load run, with the CPU time it cost: server decoding thread, rest of the server, load generator."""
    server_before, decode_before = _server_cpu(url)
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_load(url, clients, requests, tokens, endpoint, model, grammar))
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    server_after, decode_after = _server_cpu(url)
    per_token = 1e6 / max(1, result["tokens"])
    decode = (decode_after - decode_before) * per_token
    result["cpu_us_per_token"] = {
        "decoding thread": decode,
        "server, rest (event loop, HTTP, JSON)": (server_after - server_before) * per_token - decode,
        "load generator": (client_after.ru_utime + client_after.ru_stime - client_before.ru_utime
                           - client_before.ru_stime) * per_token,
    }  # fmt: skip
    return result


def engine(release: str, clients: int, requests: int, tokens: int, grammar: bool = False) -> dict:
    """`benchmark_batching` in the deploy venv: the engine's own rate with the same clients."""
    env = next(env for env in LOCATIONS if (env.path / env.package / "benchmark_batching.py").is_file())
    command = [str(env.python), "-m", f"{env.package}.benchmark_batching", "--release", release]
    command += ["--clients", str(clients), "--requests", str(requests), "--tokens", str(tokens)]
    command += ["--regex", GRAMMAR_REGEX] if grammar else []
    output = subprocess.run(command, cwd=env.path, capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"benchmark_batching failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def engine_mask_cost(release: str) -> dict:
    """`benchmark_batching --mask-cost`: the grammar mask's own cost per token at 1, 8, 32 and 64 rows."""
    env = next(env for env in LOCATIONS if (env.path / env.package / "benchmark_batching.py").is_file())
    command = [str(env.python), "-m", f"{env.package}.benchmark_batching", "--release", release, "--mask-cost",
               "--regex", GRAMMAR_REGEX]  # fmt: skip
    output = subprocess.run(command, cwd=env.path, capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"benchmark_batching failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def _start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(port)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: http_ok(url + "/ready"), 60, alive=lambda: server.poll() is None):
        sys.exit("the server did not start: is there a release? (python scripts/cli.py run)")
    return server, url


def _print_row(clients: int, figures: dict, http: dict, grammar: bool) -> None:
    ratio = http["tokens_per_second"] / figures["engine_tokens_per_second"]
    cpu = http["cpu_us_per_token"]
    print(
        f"{clients:>7} {'regex' if grammar else '-':>7} "
        f"{figures['engine_tokens_per_second']:>9,.0f} {figures['loop_tokens_per_second']:>9,.0f} "
        f"{http['tokens_per_second']:>9,.0f} {ratio:>6.0%} {http['errors']:>6} {http['p50_ms']:>7.1f} "
        f"{http['p95_ms']:>7.1f} {http['ttft_p50_ms']:>7.1f}   " + " / ".join(f"{value:.1f}" for value in cpu.values()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback); default: start one")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=400, help="requests per client count")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--endpoint", choices=["completions", "generate"], default="completions",
                        help="completions: POST /v1/completions, streamed; generate: POST /generate")  # fmt: skip
    parser.add_argument(
        "--grammar", action="store_true", help="each client count also with structured output, and the mask's cost"
    )
    args = parser.parse_args()
    if args.grammar and args.endpoint != "completions":
        sys.exit("--grammar needs --endpoint completions (structured output is OpenAI's API)")
    server, url = _start_server() if args.url is None else (None, args.url)
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("load tests target loopback only")
    try:
        with urllib.request.urlopen(url + "/ready", timeout=10) as response:
            version = json.load(response)["release"]
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as response:
            model = json.load(response)["data"][0]["id"]
        release = str(settings.OUTPUT_DIR.path() / "releases" / version)
        print(f"release {version}, {args.requests} requests of {args.max_new_tokens} tokens per client count")
        print(f"{'clients':>7} {'grammar':>7} {'engine':>9} {'+loop':>9} {'HTTP':>9} {'ratio':>6} {'errors':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'TTFT':>7}   CPU us/token: decoding / server / load gen.")  # fmt: skip
        mask_cost = {}
        for clients in args.clients:
            decoding = {}
            for grammar in (False, True) if args.grammar else (False,):
                figures = engine(release, clients, args.requests, args.max_new_tokens, grammar)
                http = run_http(url, clients, args.requests, args.max_new_tokens, args.endpoint, model, grammar)
                _print_row(clients, figures, http, grammar)
                decoding[grammar] = figures["engine_thread_cpu_us_per_token"]
            if args.grammar:
                mask_cost[clients] = decoding[True] - decoding[False]
        if mask_cost:
            costs = ", ".join(f"{cost:+.1f} us at {clients} clients" for clients, cost in mask_cost.items())
            print(f"grammar mask, engine decoding thread CPU per token (with less without): {costs}")
            alone = engine_mask_cost(release)
            print("the mask alone, sampling CPU per token (with less without): "
                  + ", ".join(f"{f['mask_us']:+.1f} us at {rows} rows" for rows, f in alone.items()))  # fmt: skip
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
