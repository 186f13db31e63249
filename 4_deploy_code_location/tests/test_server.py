"""The HTTP server, for real, on loopback: its own API, every error in its documented shape, metrics, docs."""

import json
import socket
import threading
import time

import jsonschema
import numpy as np
import pytest

from conftest import call, make_release, post
from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import resolve_release


def test_health_ready_and_generate(server):
    status, health = call(server, "/health")
    assert status == 200 and health == {"status": "ok", "release": "20260101T000000Z-aaaaaaaa"}
    status, ready = call(server, "/ready")
    assert status == 200 and ready["ready"] and ready["release"] == health["release"]
    status, body = post(server, {"prompt": "ROMEO:\n", "max_new_tokens": 30, "seed": 7, "top_k": 5})
    assert status == 200 and body["generated_tokens"] == 30 and len(body["text"]) == 30
    assert body["ms_per_token"] > 0 and body["release"] == health["release"]
    assert post(server, {"prompt": "ROMEO:\n", "max_new_tokens": 30, "seed": 7, "top_k": 5})[1]["text"] == body["text"]


BAD_REQUESTS = [
    (b"{not json", 422, "json"),
    (json.dumps({"prompt": 5}).encode(), 422, "prompt"),
    (json.dumps({"prompt": ""}).encode(), 422, "at least 1 character"),
    (json.dumps({"prompt": "a", "temperature": 0}).encode(), 422, "greater than 0"),
    (json.dumps({"prompt": "a", "max_new_tokens": 100000}).encode(), 422, "less than or equal to 1000"),
    (json.dumps({"prompt": "a", "surprise": 1}).encode(), 422, "surprise"),
    (json.dumps({"prompt": "Zq", "unknown_characters": "reject"}).encode(), 422, "outside the vocabulary"),
    (json.dumps({"prompt": "a" * 100_000}).encode(), 413, "content too large"),
    # Not finite: the error itself must still be JSON.
    (b'{"prompt": "a", "temperature": NaN}', 422, "finite number"),
    (b'{"prompt": "a", "temperature": Infinity}', 422, "finite number"),
    (b'{"prompt": "a", "temperature": 1e400}', 422, "finite number"),
    (b'{"prompt": "a\\ud800b"}', 422, "unable to parse raw data as a unicode string"),
    # Strict types: no quiet conversion.
    (b'{"prompt": "a", "seed": false}', 422, "valid integer"),
    (b'{"prompt": "a", "max_new_tokens": "5"}', 422, "valid integer"),
    ('{"prompt": "café"}'.encode("latin-1"), 400, "parsing the body"),
]


def _documented(spec: dict, path: str, method: str, status: int, body) -> None:
    """`body` is a response the OpenAPI document lists for `path`, `method`, `status`, with that schema."""
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which is not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(body)


@pytest.mark.parametrize(("body", "expected_status", "fragment"), BAD_REQUESTS)
def test_bad_requests_get_a_documented_4xx_that_says_why(server, openapi, body, expected_status, fragment):
    status, answer = call(server, "/generate", body)
    assert status == expected_status, (body[:40], answer)
    assert fragment in json.dumps(answer).lower(), answer
    _documented(openapi, "/generate", "post", status, answer)


def test_good_answers_match_the_documented_schema_too(server, openapi):
    """Good requests succeed (500 and 503 are documented too: documented is not enough) with the documented body."""
    status, body = post(server, {"prompt": "ROMEO:\n", "max_new_tokens": 5})
    assert 200 <= status < 300, body
    _documented(openapi, "/generate", "post", status, body)
    for path in ("/v1/models", "/tokenizer_info"):
        status, body = call(server, path)
        assert 200 <= status < 300, body
        _documented(openapi, path, "get", status, body)


def test_an_oversized_body_gets_the_same_413_chunked_or_not(server):
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
        answer = b""
        while piece := sock.recv(65536):  # the server closes the connection after a 413
            answer += piece
        head, _, chunked_body = answer.partition(b"\r\n\r\n")
    assert b" 413 " in head.split(b"\r\n")[0]
    status, plain = call(server, "/generate", json.dumps({"prompt": "a" * 100_000}).encode())
    assert status == 413 and json.loads(chunked_body) == plain


def test_a_tiny_temperature_is_greedy_not_nan(server, release_dir):
    status, body = post(server, {"prompt": "ROMEO", "max_new_tokens": 20, "temperature": 5e-324})
    greedy = OnnxGenerator(resolve_release(release_dir)).generate("ROMEO", 20, temperature=0)
    assert status == 200 and body["text"] == greedy.text


def test_metrics_count_every_status_and_show_batching(server):
    from prometheus_client.parser import text_string_to_metric_families

    def samples() -> dict[tuple, float]:
        status, text = call(server, "/metrics")
        assert status == 200
        families = text_string_to_metric_families(text)
        return {(s.name, *sorted(s.labels.items())): s.value for family in families for s in family.samples}

    before = samples()  # every line exists from start-up, at 0 or at what earlier tests left: count the change
    post(server, {"prompt": "a", "max_new_tokens": 2})
    call(server, "/generate", b'{"prompt": "a", "temperature": NaN}')
    after = samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, *sorted(labels.items()))
        return after[key] - before.get(key, 0)

    assert grew("generate_requests_total", status="200") == 1 and grew("generate_requests_total", status="422") == 1
    assert grew("http_requests_total", route="/generate", status="422") == 1
    assert grew("generate_latency_seconds_count") == 1 and grew("time_to_first_token_seconds_count") == 1
    assert grew("decode_batch_size_count") >= 2  # one per decoding step of the two tokens
    assert ("queue_depth",) in after and ("active_sequences",) in after


def test_docs_work_offline(server):
    status, page = call(server, "/docs")
    assert status == 200 and "cdn" not in page.lower()
    scripts = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert scripts and all(src.startswith("/") for src in scripts), scripts
    for src in scripts:
        assert call(server, src)[0] == 200


def test_a_new_release_is_picked_up_without_failing_requests_in_flight(server, release_dir):
    errors, answered, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                status, body = post(server, {"prompt": "ROMEO", "max_new_tokens": 20})
            except Exception as error:  # a reset or refused connection is a failed request too
                status, body = None, repr(error)
            answered.append(status)
            if status != 200:
                errors.append(body)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    make_release(release_dir, "20260202T000000Z-bbbbbbbb", seed=5)
    deadline = time.monotonic() + 20
    while call(server, "/health")[1]["release"] != "20260202T000000Z-bbbbbbbb" and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    assert call(server, "/health")[1]["release"] == "20260202T000000Z-bbbbbbbb"
    assert errors == [] and len(answered) >= 4  # every thread answered, through to the end


def test_concurrent_requests_decode_as_they_would_alone(server):
    """Batched with each other, each seeded request gets exactly the text it gets alone."""
    payloads = [{"prompt": p, "max_new_tokens": 40, "seed": i} for i, p in enumerate(["ROMEO:\n", "a", "But soft"] * 4)]
    alone = [post(server, payload)[1]["text"] for payload in payloads]
    together: list = [None] * len(payloads)

    def run(index: int) -> None:
        together[index] = post(server, payloads[index])[1]["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    assert len(set(alone)) > 1 and np.mean([len(t) for t in alone]) == 40
