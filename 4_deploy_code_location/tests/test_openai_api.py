"""The OpenAI-compatible API through the official `openai` client, streaming included; and the server's operations:
a client that leaves frees its slot, a full queue answers 503, SIGTERM drains, readiness waits for a release."""

import http.client
import json
import signal
import threading
import urllib.error
import urllib.request

import openai
import pytest

from conftest import call, make_release, start_server
from shared_code_location.runtime.net import wait_until


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["char-transformer"]
    assert models[0].release.startswith("2026")


def test_completion_with_usage_seed_and_several_prompts(client):
    first = client.completions.create(model="char-transformer", prompt="ROMEO:\n", max_tokens=30, seed=3)
    again = client.completions.create(model="char-transformer", prompt="ROMEO:\n", max_tokens=30, seed=3)
    assert first.object == "text_completion" and first.choices[0].finish_reason == "length"
    assert len(first.choices[0].text) == 30 and first.choices[0].text == again.choices[0].text
    assert first.usage.prompt_tokens == 7 and first.usage.completion_tokens == 30 and first.usage.total_tokens == 37
    many = client.completions.create(model="char-transformer", prompt=["a", "b"], n=2, max_tokens=5, temperature=0)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text  # temperature 0 is greedy
    assert many.usage.completion_tokens == 20


def test_stop_sequences_end_the_text_before_them(client):
    text = client.completions.create(model="char-transformer", prompt="ROMEO", max_tokens=200, temperature=0).choices
    stop = text[0].text[5:7]  # a stop string that greedy decoding is sure to reach
    stopped = client.completions.create(
        model="char-transformer", prompt="ROMEO", max_tokens=200, temperature=0, stop=[stop]
    ).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == text[0].text[: text[0].text.index(stop)]


def test_streaming_sends_each_token_then_done(client):
    whole = client.completions.create(model="char-transformer", prompt="ROMEO:\n", max_tokens=40, seed=11).choices
    chunks = list(
        client.completions.create(
            model="char-transformer",
            prompt="ROMEO:\n",
            max_tokens=40,
            seed=11,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(pieces) == 40 and "".join(pieces) == whole[0].text  # one event per token, same text as unstreamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 40


def test_unsupported_and_bad_parameters_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="char-transformer", prompt="a", best_of=2)
    assert error.value.body["param"] == "best_of" and error.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="char-transformer", prompt="a", temperature=3)
    assert error.value.body["param"] == "temperature" and "less than or equal to 2" in error.value.body["message"]
    with pytest.raises(openai.NotFoundError) as error:
        client.completions.create(model="gpt-5", prompt="a")
    assert error.value.body["code"] == "model_not_found"
    status, body = call(
        server, "/v1/completions", json.dumps({"model": "char-transformer", "prompt": "a", "x": 1}).encode()
    )
    assert status == 400 and body["error"]["param"] == "x" and body["error"]["code"] == "unrecognized_parameter"


def _active(url: str) -> float:
    metrics = call(url, "/metrics")[1]
    return float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("active_sequences ")))


def test_a_client_that_leaves_mid_stream_frees_its_slot(server):
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 1000, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    assert _active(server) >= 1
    connection.close()  # mid-stream: about 1000 tokens still to go
    assert wait_until(lambda: _active(server) == 0, 5), "the slot was not freed"


def test_a_full_queue_answers_503_in_openai_shape(release_dir):
    process, url = start_server(release_dir, "--max-batch", "1", "--max-queue", "1")
    try:
        statuses, bodies, retry_after = [], [], []

        def ask():
            payload = json.dumps({"model": "char-transformer", "prompt": "a", "max_tokens": 400}).encode()
            request = urllib.request.Request(url + "/v1/completions", payload, {"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, body = response.status, json.load(response)
            except urllib.error.HTTPError as error:
                status, body = error.code, json.load(error)
                retry_after.append(error.headers["retry-after"])
            statuses.append(status)
            bodies.append(body)

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) >= 2 and 503 in statuses, statuses
        refused = next(b for s, b in zip(statuses, bodies, strict=True) if s == 503)
        assert refused["error"]["code"] == "overloaded" and "retry later" in refused["error"]["message"]
        assert retry_after and all(value == "1" for value in retry_after)  # seconds
    finally:
        process.kill()
        process.wait()


def test_sigterm_lets_the_requests_in_flight_finish(release_dir):
    process, url = start_server(release_dir)
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 1000, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    assert response.readline().startswith(b"data: ")
    process.send_signal(signal.SIGTERM)
    events = [line for line in response.read().split(b"\n\n") if line]
    assert events[-1] == b"data: [DONE]"  # the stream ran to its end
    assert json.loads(events[-2].removeprefix(b"data: "))["choices"][0]["finish_reason"] == "length"
    # uvicorn drains, then ends by the signal it caught (as the default handler would).
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_live_before_a_release_exists_and_ready_once_one_does(tmp_path):
    process, url = start_server(tmp_path)
    try:
        assert call(url, "/health")[0] == 200
        status, body = call(url, "/ready")
        assert status == 503 and "no release" in body["detail"][0]["msg"]
        assert call(url, "/generate", b'{"prompt": "a"}')[0] == 503
        make_release(tmp_path, "20260303T000000Z-cccccccc")
        assert wait_until(lambda: call(url, "/ready")[0] == 200, 10)
        assert call(url, "/generate", b'{"prompt": "a", "max_new_tokens": 3}')[0] == 200
    finally:
        process.kill()
        process.wait()
