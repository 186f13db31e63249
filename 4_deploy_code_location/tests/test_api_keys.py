"""API keys: with keys set (`--api-key` and ML_PIPELINE_API_KEYS), every model route needs `Authorization: Bearer`,
a missing or wrong key is a 401 in the path's error shape with `WWW-Authenticate`, the probes, metrics, playground
and docs stay open, the official client's `api_key` works, and a key is never echoed or logged; without a key on an
address beyond loopback, the server warns."""

import json
import os
import subprocess
import sys

import openai
import pytest

from conftest import API_KEYS, call
from deploy_code_location.serving.api_keys import ApiKeys, is_loopback, parse_keys
from shared_code_location import settings

CLOSED = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/char-transformer", None),
    ("POST", "/v1/completions", {"model": "char-transformer", "prompt": "a", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"model": "char-transformer", "messages": [{"role": "user", "content": "a"}]}),
    ("POST", "/generate", {"prompt": "a", "max_new_tokens": 2}),
    ("POST", "/tokenize", {"prompt": "a"}),
    ("POST", "/detokenize", {"tokens": [1]}),
    ("GET", "/tokenizer_info", None),
    ("GET", "/no/such/route", None),  # closed too: a route added later needs a key unless opened on purpose
]


def _ask(url: str, method: str, path: str, body, authorization: str | None) -> tuple[int, dict, dict | str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + path, None if body is None else json.dumps(body).encode(), method=method)
    request.add_header("content-type", "application/json")
    if authorization is not None:
        request.add_header("authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.mark.parametrize(("method", "path", "body"), CLOSED)
def test_every_model_route_needs_a_key(keyed_server, method, path, body):
    url, _ = keyed_server
    for authorization in (None, "Bearer sk-wrong", "Basic " + API_KEYS[0], f"Bearer {API_KEYS[0]}x"):
        status, headers, answer = _ask(url, method, path, body, authorization)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (authorization, answer)
        if path.startswith("/v1"):
            assert answer["error"]["type"] == "invalid_request_error"
            assert answer["error"]["code"] in ("missing_api_key", "invalid_api_key")
        else:
            assert answer["detail"][0]["type"] in ("missing_api_key", "invalid_api_key")
        assert API_KEYS[0] not in json.dumps(answer) and API_KEYS[0] not in json.dumps(headers)
    expected = 404 if path.startswith("/no") else 200
    for key in API_KEYS:  # one from the command line, one from the environment
        assert _ask(url, method, path, body, f"Bearer {key}")[0] == expected


def test_probes_metrics_playground_and_docs_stay_open(keyed_server):
    url, _ = keyed_server
    for path in ("/health", "/ready", "/metrics", "/", "/docs", "/openapi.json", "/favicon.ico"):
        assert call(url, path)[0] == 200, path


def test_the_official_clients_api_key_works(keyed_server):
    url, _ = keyed_server
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEYS[1], max_retries=0, timeout=30)
    assert client.completions.create(model="char-transformer", prompt="a", max_tokens=3).choices[0].text
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="sk-not-a-key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as error:
        wrong.models.list()
    assert error.value.body["code"] == "invalid_api_key"


def test_keys_are_never_logged(keyed_server):
    url, process = keyed_server
    for key in (API_KEYS[0], "sk-a-wrong-key-to-look-for"):
        _ask(url, "POST", "/v1/completions", {"model": "char-transformer", "prompt": "a", "max_tokens": 2},
             f"Bearer {key}")  # fmt: skip
    os.set_blocking(process.stdout.fileno(), False)
    output = (process.stdout.read() or b"").decode()
    assert "with 2 API keys" in output  # its banner: both sources counted, neither key shown
    assert not any(key in output for key in (*API_KEYS, "sk-a-wrong-key-to-look-for"))


def test_the_bearer_check():
    keys = ApiKeys(None, parse_keys(" a-key , other,, a-key", ["third"]))
    assert [keys.allows(v) for v in (b"Bearer a-key", b"bearer other", b"Bearer  third ")] == [True, True, True]
    assert not any(keys.allows(v) for v in (None, b"", b"Bearer", b"Bearer a-ke", b"Token a-key", b"a-key"))
    assert parse_keys(" a-key , other,, a-key", ["third"]) == ["a-key", "other", "third"]
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost")] == [True] * 4
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.org"))


def test_a_server_beyond_loopback_without_a_key_warns(tmp_path):
    """192.0.2.1 (TEST-NET-1) is on no interface here: the server warns, then fails to bind; nothing listens."""
    env = {k: v for k, v in os.environ.items() if k != settings.API_KEYS.name}
    command = [sys.executable, "-m", "deploy_code_location.serving", "--output-dir", str(tmp_path), "--host",
               "192.0.2.1", "--port", "8999"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert "WARNING: serving on 192.0.2.1 without an API key" in output.stderr
    assert settings.API_KEYS.name in output.stderr
