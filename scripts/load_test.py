"""Load benchmark of the HTTP server: a bounded number of requests from N concurrent clients, on loopback only.

`python scripts/load_test.py --clients 1 8 32 --requests 200` starts `cli.py serve` on a free loopback port (or use
`--url` for a running server), then prints p50/p95 latency, throughput and errors per client count. It stops itself.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from shared_code_location.net import free_port, http_ok, wait_until  # noqa: E402


def post(url: str, payload: dict) -> tuple[int, float]:
    request = urllib.request.Request(
        url + "/generate", json.dumps(payload).encode(), {"content-type": "application/json"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def run_load(url: str, clients: int, requests: int, max_new_tokens: int) -> dict:
    """`requests` requests shared by `clients` threads, each sending one at a time."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    remaining = iter(range(requests))

    def client() -> None:
        nonlocal errors
        for i in remaining:  # a shared iterator: the total is bounded
            status, seconds = post(url, {"prompt": "ROMEO:\n", "max_new_tokens": max_new_tokens, "seed": i})
            with lock:
                if status == 200:
                    latencies.append(seconds)
                else:
                    errors += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "p50_ms": 1000 * quantiles[49],
        "p95_ms": 1000 * quantiles[94],
        "requests_per_second": len(latencies) / wall,
        "tokens_per_second": len(latencies) * max_new_tokens / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback); default: start one")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="requests per client count")
    parser.add_argument("--max-new-tokens", type=int, default=50)
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
        print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7} {'tokens/s':>9}")
        for clients in args.clients:
            r = run_load(url, clients, args.requests, args.max_new_tokens)
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                f"{r['requests_per_second']:>7.1f} {r['tokens_per_second']:>9.0f}"
            )
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
