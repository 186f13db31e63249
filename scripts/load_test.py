"""Load benchmark of the HTTP server: a bounded number of requests from N concurrent clients, on loopback only.

`python scripts/load_test.py --clients 1 8 32 64 --requests 200` starts `cli.py serve` on a free loopback port (or
use `--url` for a running server), then prints, per client count, errors, p50/p95 latency, the median time to the
first token, requests/s and tokens/s. Each client keeps its connection alive and streams from /v1/completions
(`--endpoint generate` for the server's own /generate). It stops itself.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from shared_code_location.net import free_port, http_ok, wait_until  # noqa: E402


class Client:
    """One simulated user: a kept-alive connection, one request at a time."""

    def __init__(self, url: str, endpoint: str, model: str | None):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        self.endpoint, self.model = endpoint, model

    def request(self, max_new_tokens: int, seed: int) -> tuple[int, float, float]:
        """(status, seconds to the first token, seconds to the end) of one request."""
        if self.endpoint == "generate":
            path, payload = "/generate", {"prompt": "ROMEO:\n", "max_new_tokens": max_new_tokens, "seed": seed}
        else:
            path = "/v1/completions"
            payload = {"model": self.model, "prompt": "ROMEO:\n", "max_tokens": max_new_tokens, "seed": seed}
            payload["stream"] = True
        start = time.perf_counter()
        first = None
        try:
            self.connection.request("POST", path, json.dumps(payload), {"content-type": "application/json"})
            response = self.connection.getresponse()
            if self.endpoint == "generate" or response.status != 200:
                response.read()
            else:
                while line := response.readline():
                    if line.startswith(b"data: ") and first is None:
                        first = time.perf_counter() - start
                    if line.startswith(b"data: [DONE]"):
                        response.read()
                        break
            status = response.status
        except OSError:
            self.connection.close()
            status = 0
        total = time.perf_counter() - start
        return status, first if first is not None else total, total


def run_load(url: str, clients: int, requests: int, max_new_tokens: int, endpoint: str, model: str | None) -> dict:
    """`requests` requests shared by `clients` threads, each sending one at a time."""
    latencies: list[float] = []
    first_tokens: list[float] = []
    errors = 0
    lock = threading.Lock()
    remaining = iter(range(requests))

    def user() -> None:
        nonlocal errors
        client = Client(url, endpoint, model)
        for i in remaining:  # a shared iterator: the total is bounded
            status, first, seconds = client.request(max_new_tokens, i)
            with lock:
                if status == 200:
                    latencies.append(seconds)
                    first_tokens.append(first)
                else:
                    errors += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start

    def quantile(values: list[float], q: int) -> float:
        return 1000 * (statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0])

    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "p50_ms": quantile(latencies, 50),
        "p95_ms": quantile(latencies, 95),
        "ttft_p50_ms": quantile(first_tokens, 50),
        "requests_per_second": len(latencies) / wall,
        "tokens_per_second": len(latencies) * max_new_tokens / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback); default: start one")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=200, help="requests per client count")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument(
        "--endpoint",
        choices=["completions", "generate"],
        default="completions",
        help="completions: POST /v1/completions, streamed (time to first token is the first event); "
        "generate: POST /generate (first token = whole answer)",
    )
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(port)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        if not wait_until(lambda: http_ok(url + "/health"), 60, alive=lambda: server.poll() is None):
            sys.exit("the server did not start: is there a release? (python scripts/cli.py run)")
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("load tests target loopback only")
    try:
        model = None
        if args.endpoint == "completions":
            with urllib.request.urlopen(url + "/v1/models", timeout=10) as response:
                model = json.load(response)["data"][0]["id"]
        print(
            f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'TTFT p50':>9} {'req/s':>7} "
            f"{'tokens/s':>9}"
        )
        for clients in args.clients:
            r = run_load(url, clients, args.requests, args.max_new_tokens, args.endpoint, model)
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                f"{r['ttft_p50_ms']:>9.1f} {r['requests_per_second']:>7.1f} {r['tokens_per_second']:>9.0f}"
            )
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
