"""The OpenAPI document tells the truth: every limit the server enforces is in it, refused parameters are offered at
their neutral value only, every documented status is one a path really sends (and every one sent is documented,
with its shape), streams are documented as `text/event-stream` of their chunk schema, the examples succeed; and the
smaller defects found by a schema fuzzer and raw sockets stay fixed."""

import json
import socket
import urllib.request

import jsonschema
import pytest

from conftest import call, make_release, start_server

MODEL = "char-transformer"


def _completion(**fields) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "ROMEO", "max_tokens": 3} | fields).encode()


def _chat(**fields) -> bytes:
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_tokens": 3} | fields
    ).encode()


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory):
    """A server before any release: every route that needs one answers 503."""
    process, url = start_server(tmp_path_factory.mktemp("empty"))
    yield url
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A server on a broken release: its vocabulary holds characters the model has no embedding for, its card no
    sha256 and no valid date, its chat template recurses. Every route that uses those answers 500."""
    output = tmp_path_factory.mktemp("broken")
    folder = make_release(output, "20260404T000000Z-dddddddd")
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    vocabulary["symbols"] = [*vocabulary["symbols"], *"XYZ"]
    vocabulary["vocab_size"] += 3
    (folder / "vocabulary.json").write_text(json.dumps(vocabulary))
    card = json.loads((folder / "model_card.json").read_text())
    card.pop("model_sha256")
    (folder / "model_card.json").write_text(json.dumps(card | {"created_at": "not a date"}))
    (folder / "chat_template.jinja").write_text("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    process, url = start_server(output)
    yield url
    process.kill()
    process.wait()


def _requests(server, not_ready, broken, keyed):
    """(server, method, path, body) -> the status it must get: together, every status every path documents."""
    huge = json.dumps({"prompt": "a" * 70_000}).encode()
    utf16 = '{"model": "char-transformer", "prompt": "a"}'.encode("utf-16")
    return [
        (keyed, "GET", "/v1/models", None, 401),
        (keyed, "GET", f"/v1/models/{MODEL}", None, 401),
        (keyed, "POST", "/v1/completions", _completion(), 401),
        (keyed, "POST", "/v1/chat/completions", _chat(), 401),
        (keyed, "POST", "/generate", b'{"prompt": "a"}', 401),
        (keyed, "POST", "/tokenize", b'{"prompt": "a"}', 401),
        (keyed, "POST", "/detokenize", b'{"tokens": [1]}', 401),
        (keyed, "GET", "/tokenizer_info", None, 401),
        (server, "GET", "/tokenizer_info", None, 200),
        (not_ready, "GET", "/tokenizer_info", None, 503),
        (server, "GET", "/v1/models", None, 200),
        (not_ready, "GET", "/v1/models", None, 503),
        (broken, "GET", "/v1/models", None, 500),
        (server, "GET", f"/v1/models/{MODEL}", None, 200),
        (server, "GET", "/v1/models/gpt-5", None, 404),
        (not_ready, "GET", f"/v1/models/{MODEL}", None, 503),
        (broken, "GET", f"/v1/models/{MODEL}", None, 500),
        (server, "POST", "/v1/completions", _completion(), 200),
        (server, "POST", "/v1/completions", _completion(n=9), 400),
        (server, "POST", "/v1/completions", utf16, 400),
        (server, "POST", "/v1/completions", _completion(model="gpt-5"), 404),
        (server, "POST", "/v1/completions", huge, 413),
        (broken, "POST", "/v1/completions", _completion(prompt="XYZ"), 500),
        (not_ready, "POST", "/v1/completions", _completion(), 503),
        (server, "POST", "/v1/chat/completions", _chat(), 200),
        (server, "POST", "/v1/chat/completions", _chat(messages=[]), 400),
        (server, "POST", "/v1/chat/completions", _chat(model="gpt-5"), 404),
        (server, "POST", "/v1/chat/completions", huge, 413),
        (broken, "POST", "/v1/chat/completions", _chat(), 500),
        (not_ready, "POST", "/v1/chat/completions", _chat(), 503),
        (server, "POST", "/generate", b'{"prompt": "a", "max_new_tokens": 2}', 200),
        (server, "POST", "/generate", '{"prompt": "a"}'.encode("utf-16"), 400),
        (server, "POST", "/generate", huge, 413),
        (server, "POST", "/generate", b'{"prompt": ""}', 422),
        (broken, "POST", "/generate", b'{"prompt": "XYZ"}', 500),
        (not_ready, "POST", "/generate", b'{"prompt": "a"}', 503),
        (server, "POST", "/tokenize", b'{"prompt": "a"}', 200),
        (server, "POST", "/tokenize", b'{"messages": [{"role": "user", "content": "a"}], "model": "x"}', 404),
        (server, "POST", "/tokenize", '{"prompt": "a"}'.encode("utf-16"), 400),
        (server, "POST", "/tokenize", huge, 413),
        (server, "POST", "/tokenize", b'{"prompt": 1}', 422),
        (broken, "POST", "/tokenize", b'{"messages": [{"role": "user", "content": "a"}]}', 500),
        (not_ready, "POST", "/tokenize", b'{"prompt": "a"}', 503),
        (server, "POST", "/detokenize", b'{"tokens": [1]}', 200),
        (server, "POST", "/detokenize", b'{"tokens": [1], "model": "x"}', 404),
        (server, "POST", "/detokenize", '{"tokens": [1]}'.encode("utf-16"), 400),
        (server, "POST", "/detokenize", json.dumps({"tokens": [1] * 30_000}).encode(), 413),
        (server, "POST", "/detokenize", b'{"tokens": [-1]}', 422),
        (not_ready, "POST", "/detokenize", b'{"tokens": [1]}', 503),
        (server, "GET", "/health", None, 200),
        (server, "HEAD", "/health", None, 200),
        (server, "GET", "/ready", None, 200),
        (server, "HEAD", "/ready", None, 200),
        (not_ready, "GET", "/ready", None, 503),
        (not_ready, "HEAD", "/ready", None, 503),
        (broken, "GET", "/ready", None, 500),
        (broken, "HEAD", "/ready", None, 500),
        (server, "GET", "/metrics", None, 200),
    ]


def _send(url: str, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + path, data=body, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _validate(spec: dict, schema: dict, value) -> None:
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(value)


def test_every_documented_status_is_sent_and_every_sent_status_is_documented(
    server, not_ready, broken, keyed_server, openapi
):
    sent: dict[tuple[str, str], set[int]] = {}
    for url, method, path, body, expected in _requests(server, not_ready, broken, keyed_server[0]):
        status, headers, raw = _send(url, method, path, body)
        assert status == expected, (method, path, body and body[:60], raw[:300])
        template = "/v1/models/{model}" if path.startswith("/v1/models/") else path
        responses = openapi["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} sent {status}, which is not documented"
        sent.setdefault((template, method.lower()), set()).add(status)
        content = responses[str(status)].get("content", {})
        if method != "HEAD" and "application/json" in content:
            _validate(openapi, content["application/json"]["schema"], json.loads(raw))
        if status == 503:
            assert int(headers["retry-after"]) >= 1
        if status == 401:
            assert headers["www-authenticate"].startswith("Bearer")
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            assert set(map(int, operation["responses"])) == sent[(path, method)], (method, path)


def _schema(openapi: dict, name: str) -> dict:
    return openapi["components"]["schemas"][name]["properties"]


def test_every_enforced_limit_is_in_the_schema(openapi):
    completion = _schema(openapi, "CompletionRequest")
    one, many = completion["prompt"]["anyOf"]
    assert (one["minLength"], one["maxLength"]) == (1, 4000)
    assert (many["minItems"], many["maxItems"], many["items"]["maxLength"]) == (1, 16, 4000)
    assert completion["stop"]["anyOf"][1]["maxItems"] == 4
    integer = lambda prop: next(s for s in prop["anyOf"] if s["type"] == "integer")  # noqa: E731
    assert (integer(completion["max_tokens"])["minimum"], integer(completion["max_tokens"])["maximum"]) == (0, 1000)
    assert integer(completion["n"])["maximum"] == 8 and integer(completion["logprobs"])["maximum"] == 5
    assert integer(completion["seed"]) == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    chat = _schema(openapi, "ChatCompletionRequest")
    assert (chat["messages"]["minItems"], chat["messages"]["maxItems"]) == (1, 64)
    generate = _schema(openapi, "GenerateRequest")
    assert generate["prompt"]["maxLength"] == 4000 and generate["max_new_tokens"]["maximum"] == 1000
    assert '"ge"' not in json.dumps(openapi) and '"le"' not in json.dumps(openapi)  # only JSON Schema's keywords


REFUSED = [
    ("best_of", 1, 2),
    ("suffix", None, "!"),
]


@pytest.mark.parametrize(("name", "neutral", "other"), REFUSED)
def test_a_refused_parameter_is_offered_at_its_neutral_value_only(server, openapi, name, neutral, other):
    prop = _schema(openapi, "CompletionRequest")[name]
    validator = jsonschema.Draft202012Validator(prop)
    assert validator.is_valid(neutral) and not validator.is_valid(other)
    assert _send(server, "POST", "/v1/completions", _completion(**{name: neutral}))[0] == 200
    status, _, raw = _send(server, "POST", "/v1/completions", _completion(**{name: other}))
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] == name and error["code"] == "unsupported_parameter"


def _events(raw: bytes) -> list[dict]:
    lines = [line for line in raw.decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


@pytest.mark.parametrize(
    ("path", "body", "chunk"),
    [
        ("/v1/completions", _completion(stream=True, n=2, logprobs=2, echo=True, max_tokens=5,
                                        stream_options={"include_usage": True}), "CompletionChunk"),
        ("/v1/chat/completions", _chat(stream=True, logprobs=True, top_logprobs=1,
                                       stream_options={"include_usage": True}), "ChatCompletionChunk"),
    ],
)  # fmt: skip
def test_streams_are_documented_as_event_streams_of_their_chunk_schema(server, openapi, path, body, chunk):
    content = openapi["paths"][path]["post"]["responses"]["200"]["content"]
    assert content["text/event-stream"]["schema"] == {"$ref": f"#/components/schemas/{chunk}"}
    status, headers, raw = _send(server, "POST", path, body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = _events(raw)
    for event in events:
        _validate(openapi, {"$ref": f"#/components/schemas/{chunk}"}, event)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0


def test_the_examples_are_valid_requests_that_succeed(server, openapi):
    for path in ("/v1/completions", "/v1/chat/completions", "/generate", "/tokenize", "/detokenize"):
        schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        (example,) = openapi["components"]["schemas"][name]["examples"]
        _validate(openapi, schema, example)
        status, _, raw = _send(server, "POST", path, json.dumps(example).encode())
        assert status == 200, (path, raw[:300])


def test_a_whole_number_may_be_written_as_a_float(server):
    assert _send(server, "POST", "/v1/completions", _completion(max_tokens=4.0))[0] == 200
    status, _, raw = _send(server, "POST", "/v1/completions", _completion(max_tokens=4.5))
    assert status == 400 and json.loads(raw)["error"]["param"] == "max_tokens"


def test_malformed_json_is_named_as_such_not_as_a_parameter(server):
    status, _, raw = _send(server, "POST", "/v1/completions", b'{"model": "char-transformer", "prompt": ')
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] is None and error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"] and "at character" in error["message"]


def test_404_and_405_are_client_errors_that_say_what_happened(server):
    status, headers, raw = _send(server, "GET", "/v1/completions", None)
    error = json.loads(raw)["error"]
    assert status == 405 and error["type"] == "invalid_request_error" and headers["allow"] == "POST"
    assert error["message"] == "GET is not allowed on /v1/completions"
    status, _, raw = _send(server, "GET", "/v1/nothing", None)
    error = json.loads(raw)["error"]
    assert status == 404 and error["message"] == "no route /v1/nothing" and error["type"] == "invalid_request_error"
    status, _, raw = _send(server, "POST", "/v1/completions", _completion(n=9))
    assert not json.loads(raw)["error"]["message"].startswith("body")


def test_stream_options_need_stream(server):
    status, _, raw = _send(server, "POST", "/v1/completions", _completion(stream_options={"include_usage": True}))
    assert status == 400 and json.loads(raw)["error"]["param"] == "stream_options"
    status, _, raw = _send(server, "POST", "/v1/chat/completions", _chat(stream_options={"include_usage": True}))
    assert status == 400 and json.loads(raw)["error"]["param"] == "stream_options"


def test_a_body_that_is_not_utf8_is_a_400_even_if_json_could_guess_its_encoding(server):
    for encoding in ("utf-16", "utf-32", "latin-1"):
        status, _, raw = _send(server, "POST", "/v1/completions", '{"model": "é", "prompt": "a"}'.encode(encoding))
        assert status == 400 and "not UTF-8" in json.loads(raw)["error"]["message"], encoding


def test_metric_labels_are_route_templates_not_raw_paths(server):
    def series() -> int:
        return sum(1 for line in call(server, "/metrics")[1].splitlines() if line.startswith("http_requests_total{"))

    for i in range(5):
        _send(server, "GET", f"/warmup-{i}", None)
    before = series()
    for i in range(300):
        _send(server, "GET", f"/scan/{i}", None)
    _send(server, "GET", "/v1/models/some-other-model", None)
    assert series() - before <= 1
    text = call(server, "/metrics")[1]
    assert 'http_requests_total{route="unmatched",status="404"}' in text
    assert 'route="/v1/models/{model}"' in text


def test_health_answers_head_and_there_is_an_icon(server):
    assert _send(server, "HEAD", "/health", None)[0] == 200
    status, headers, raw = _send(server, "GET", "/favicon.ico", None)
    assert status == 200 and headers["content-type"] == "image/svg+xml" and raw.startswith(b"<svg")


def test_a_chunked_oversized_body_keeps_the_connection_usable(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            sock.sendall(b"8000\r\n" + b"a" * 0x8000 + b"\r\n")
        sock.sendall(b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while answer.count(b"HTTP/1.1") < 2 and (piece := sock.recv(65536)):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 413") and b"HTTP/1.1 200" in answer


_TOKENIZE_MESSAGES = [{"role": "user", "content": "a"}]
#: (path, a request the server refuses, the status, a request beside it that it serves): each rule that joins two
#: fields, or a field and the release, as found by a schema fuzzer (the schema accepted what the server refused).
CROSS_FIELD = [
    ("/v1/completions", {"max_tokens": 0}, 400, {"max_tokens": 0, "echo": True}),
    ("/v1/completions", {"stream_options": {"include_usage": True}}, 400, {"stream_options": None}),
    ("/v1/completions", {"logit_bias": {"999": 1}}, 400, {"logit_bias": {"2": 1}}),
    ("/v1/completions", {"structured_outputs": {"regex": "a+"}, "stop": ["x"]}, 400,
     {"structured_outputs": {"regex": "a+"}}),
    ("/v1/completions", {"structured_outputs": {"regex": "a+", "choice": ["a"]}}, 400,
     {"structured_outputs": {"choice": ["a"]}}),
    ("/v1/completions", {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, 400,
     {"response_format": {"type": "text"}, "structured_outputs": {"regex": "a"}}),
    ("/v1/chat/completions", {"top_logprobs": 2}, 400, {"top_logprobs": 2, "logprobs": True}),
    ("/tokenize", {}, 422, {"prompt": "a"}),
    ("/tokenize", {"prompt": "a", "messages": _TOKENIZE_MESSAGES}, 422, {"messages": _TOKENIZE_MESSAGES}),
    ("/detokenize", {"tokens": [9999]}, 422, {"tokens": [1]}),
    ("/generate", {"prompt": "Zq", "unknown_characters": "reject"}, 422, {"prompt": "Zq"}),
]  # fmt: skip


def _body(path: str, fields: dict) -> dict:
    if path == "/v1/completions":
        return json.loads(_completion()) | fields
    if path == "/v1/chat/completions":
        return json.loads(_chat()) | fields
    return {"max_new_tokens": 2} | fields if path == "/generate" else fields


@pytest.mark.parametrize(("path", "refused", "status", "served"), CROSS_FIELD)
def test_a_rule_between_fields_is_in_the_schema_and_enforced(server, openapi, path, refused, status, served):
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": openapi["components"]})
    assert not validator.is_valid(_body(path, refused)), "the schema accepts what the server refuses"
    assert validator.is_valid(_body(path, served))
    answer = _send(server, "POST", path, json.dumps(_body(path, refused)).encode())
    assert answer[0] == status, answer[2][:300]
    answer = _send(server, "POST", path, json.dumps(_body(path, served)).encode())
    assert answer[0] == 200, answer[2][:300]


def test_rules_json_schema_cannot_say_are_in_the_descriptions(openapi):
    completion = _schema(openapi, "CompletionRequest")
    assert "at most the maximum number of tokens" in completion["min_tokens"]["description"]
    assert "vocabulary size" in completion["logit_bias"]["description"]
    assert "not with structured output" in completion["stop"]["description"]
    assert "only with `echo: true`" in completion["max_tokens"]["description"]
    assert "only with `logprobs: true`" in _schema(openapi, "ChatCompletionRequest")["top_logprobs"]["description"]


def test_the_release_bounds_are_in_the_served_document_only(server, not_ready):
    vocab = call(server, "/tokenizer_info")[1]["vocab_size"]
    served = call(server, "/openapi.json")[1]["components"]["schemas"]
    assert served["DetokenizeRequest"]["properties"]["tokens"]["items"]["maximum"] == vocab - 1
    bias = next(o for o in served["CompletionRequest"]["properties"]["logit_bias"]["anyOf"] if o["type"] == "object")
    assert bias["propertyNames"] == {"enum": [str(i) for i in range(vocab)]}
    general = call(not_ready, "/openapi.json")[1]["components"]["schemas"]
    assert "maximum" not in general["DetokenizeRequest"]["properties"]["tokens"]["items"]
    bias = next(o for o in general["CompletionRequest"]["properties"]["logit_bias"]["anyOf"] if o["type"] == "object")
    assert set(bias["propertyNames"]) == {"pattern"} and "patternProperties" not in bias


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_options_and_other_methods_get_405_with_every_allowed_method(server, path):
    for method in ("OPTIONS", "DELETE"):
        status, headers, _ = _send(server, method, path, None)
        assert status == 405 and headers["allow"] == "GET, HEAD", (method, headers)
    assert _send(server, "OPTIONS", "/v1/completions", None)[1]["allow"] == "POST"
