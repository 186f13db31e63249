"""Fair scheduling: one large request cannot take every row, a stream whose client stops reading is cancelled and its
rows freed, and the other clients are served meanwhile within a bounded latency."""

import json
import socket
import statistics
import threading
import time

import numpy as np
import openai
import pytest

from conftest import call, start_server
from deploy_code_location.onnx_generator import OnnxGenerator, Sequence
from deploy_code_location.release_store import resolve_release
from deploy_code_location.serving.batcher import Batcher
from deploy_code_location.serving.metrics import metric_value
from shared_code_location.runtime.net import wait_until


def test_a_small_request_gets_a_row_at_the_next_step_however_large_the_others(release_dir):
    generator = OnnxGenerator(resolve_release(release_dir, "20260101T000000Z-aaaaaaaa"))
    steps, first_token_step, done = [0], {}, threading.Event()
    batcher = Batcher(max_batch=8, on_step=lambda _size: steps.__setitem__(0, steps[0] + 1))
    prompt = list(map(int, generator.tokenizer.encode("ROMEO:\n")))

    def sequence(name: str, tokens: int) -> Sequence:
        def on_token(_token, _scores) -> bool:
            first_token_step.setdefault(name, steps[0])
            return True

        return Sequence(list(prompt), tokens, lambda logits: int(np.argmax(logits[1:])) + 1, on_token=on_token,
                        on_finish=lambda s: done.set() if name == "small" else None)  # fmt: skip

    large = [sequence(f"large-{i}", 400) for i in range(128)]
    try:
        batcher.submit(generator, large)
        assert wait_until(lambda: batcher.stats.active == 8, 5)
        time.sleep(0.05)
        submitted_at = steps[0]
        batcher.submit(generator, [sequence("small", 5)])
        assert done.wait(10)
        assert first_token_step["small"] - submitted_at <= 2  # one step to be admitted (a row evicted), one to emit
        assert batcher.stats.evictions >= 1 and batcher.stats.active <= 8
    finally:
        for row in large:
            row.cancel()
        batcher.stop()


@pytest.fixture(scope="module")
def impatient_server(release_dir):
    """A server that cancels a stream whose client has not read for 2 s."""
    process, url = start_server(release_dir, "--stall-seconds", "2")
    yield url
    process.kill()
    process.wait()


def _stalled_client(url: str) -> socket.socket:
    """A streaming request of 16 prompts x 8 choices x 1000 tokens (every row it can get) that is never read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(
        {"model": "char-transformer", "prompt": ["ROMEO:\n"] * 16, "n": 8, "max_tokens": 1000, "stream": True}
    ).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def test_clients_that_stop_reading_do_not_stop_the_others(impatient_server):
    client = openai.OpenAI(base_url=impatient_server + "/v1", api_key="x", max_retries=0, timeout=30)
    stalled = [_stalled_client(impatient_server) for _ in range(5)]
    try:
        assert wait_until(lambda: metric_value(call(impatient_server, "/metrics")[1], "active_sequences") >= 60, 10)
        latencies, started = [], time.monotonic()
        while time.monotonic() - started < 6:  # through the stall and its cancellation (2 s after the socket fills)
            t0 = time.perf_counter()
            answer = client.completions.create(model="char-transformer", prompt="JULIET:\n", max_tokens=20)
            latencies.append(time.perf_counter() - t0)
            assert len(answer.choices[0].text) == 20
        metrics = call(impatient_server, "/metrics")[1]
        print(
            f"\nwhile 5 clients (640 sequences) stalled: {len(latencies)} requests of 20 tokens, latency p50 "
            f"{1000 * statistics.median(latencies):.0f} ms, max {1000 * max(latencies):.0f} ms; "
            f"{metric_value(metrics, 'stalled_streams_total'):.0f} stalled streams cancelled, "
            f"{metric_value(metrics, 'evicted_rows'):.0f} rows evicted for fairness"
        )
        assert max(latencies) < 5.0  # the bound; before fair scheduling these got 503 or timed out for 15-30 s
        assert wait_until(lambda: metric_value(call(impatient_server, "/metrics")[1], "stalled_streams_total") == 5, 20)
        assert wait_until(lambda: metric_value(call(impatient_server, "/metrics")[1], "active_sequences") == 0, 5)
    finally:
        for sock in stalled:
            sock.close()
