"""The HTTP server, for real, on loopback."""

import json
import socket
import threading
import urllib.error
import urllib.request

from conftest import make_release


def call(url: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url + path, data=body, headers=headers or {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status = response.read().decode(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read().decode(), error.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def post(url: str, payload) -> tuple[int, dict]:
    return call(url, "/generate", json.dumps(payload).encode())


def test_health_and_generate(server):
    status, health = call(server, "/health")
    assert status == 200 and health["ready"] and health["release"] == "20260101T000000Z-aaaaaaaa"
    status, body = post(server, {"prompt": "ROMEO:\n", "max_new_tokens": 30, "seed": 7, "top_k": 5})
    assert status == 200 and body["generated_tokens"] == 30 and len(body["text"]) == 30
    assert body["ms_per_token"] > 0 and body["release"] == health["release"]
    assert post(server, {"prompt": "ROMEO:\n", "max_new_tokens": 30, "seed": 7, "top_k": 5})[1]["text"] == body["text"]


def test_bad_requests_get_4xx_with_a_reason(server):
    cases = [
        (b"{not json", 422, "json"),  # FastAPI: a JSON decode error
        (json.dumps({"prompt": 5}).encode(), 422, "prompt"),
        (json.dumps({"prompt": ""}).encode(), 422, "at least 1 character"),
        (json.dumps({"prompt": "a", "temperature": 0}).encode(), 422, "greater than 0"),
        (json.dumps({"prompt": "a", "max_new_tokens": 100000}).encode(), 422, "less than or equal to 1000"),
        (json.dumps({"prompt": "a", "surprise": 1}).encode(), 422, "surprise"),
        (json.dumps({"prompt": "Zq", "unknown_characters": "reject"}).encode(), 422, "outside the vocabulary"),
        (json.dumps({"prompt": "a" * 100_000}).encode(), 413, "content too large"),
    ]
    for body, expected_status, fragment in cases:
        status, answer = call(server, "/generate", body)
        assert status == expected_status, (body[:40], answer)
        assert fragment in json.dumps(answer).lower(), answer


def test_chunked_oversized_body_is_refused(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 32768
        for _ in range(3):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        assert b" 413 " in sock.recv(4096).split(b"\r\n")[0]


def test_metrics_are_prometheus_text(server):
    post(server, {"prompt": "a", "max_new_tokens": 2})
    status, text = call(server, "/metrics")
    assert status == 200
    assert 'generate_requests_total{status="200"}' in text and "generate_latency_seconds_bucket" in text


def test_openapi_page(server):
    status, spec = call(server, "/openapi.json")
    assert status == 200 and "/generate" in spec["paths"]


def test_a_new_release_is_picked_up_without_failing_requests_in_flight(server, release_dir):
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            status, body = post(server, {"prompt": "ROMEO", "max_new_tokens": 20})
            if status != 200:
                errors.append(body)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    make_release(release_dir, "20260202T000000Z-bbbbbbbb", seed=5)
    import time

    deadline = time.monotonic() + 20
    while call(server, "/health")[1]["release"] != "20260202T000000Z-bbbbbbbb" and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    assert call(server, "/health")[1]["release"] == "20260202T000000Z-bbbbbbbb"
    assert errors == []
