import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from deploy_code_location.chat_template import CHAT_TEMPLATE_FILE, DEFAULT_STOP, default_template
from deploy_code_location.onnx_export import export_onnx, max_logit_difference
from deploy_code_location.release_checks import PARITY_KEY, parity_record
from deploy_code_location.release_store import point_latest_to, write_release
from shared_code_location import settings
from shared_code_location.contract.storage_formats import sha256_hex
from shared_code_location.model.tokenizer import CharTokenizer
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig
from shared_code_location.runtime.net import free_port, http_ok, wait_until

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
#: Characters the tiny release knows besides TEXT's, so that structured output can write JSON and numbers with it.
JSON_CHARACTERS = '{}[]"0123456789.-_'


def tiny_model(seed: int = 0) -> DecoderTransformer:
    torch.manual_seed(seed)
    tokenizer = CharTokenizer.fit(TEXT + JSON_CHARACTERS)
    return DecoderTransformer(
        TransformerConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    ).eval()


def make_release(output_dir: Path, version: str, seed: int = 0, point_latest: bool = True) -> Path:
    """A real release folder from a tiny real model, as `deploy/release` writes one: exported ONNX, vocabulary,
    chat template, model card with the parity measured; `latest.json` moved to it unless `point_latest` is False."""
    model = tiny_model(seed)
    onnx_bytes = export_onnx(model)
    card = {
        "version": version,
        "created_at": f"{version[:4]}-{version[4:6]}-{version[6:8]}T00:00:00+00:00",
        "model_sha256": sha256_hex(onnx_bytes),
        "model_config": model.config.to_json(),
        "experiment": {"name": f"seed-{seed}"},
        "training": {"validation_loss": 3.0 + seed / 100},
        "checks": {PARITY_KEY: parity_record(max_logit_difference(model, onnx_bytes))},
        "chat": {"template": CHAT_TEMPLATE_FILE, "stop": list(DEFAULT_STOP)},
    }
    folder = write_release(
        output_dir,
        version,
        {
            "model.onnx": onnx_bytes,
            "vocabulary.json": json.dumps(CharTokenizer.fit(TEXT + JSON_CHARACTERS).to_json()).encode(),
            CHAT_TEMPLATE_FILE: default_template().encode(),
            "model_card.json": json.dumps(card).encode(),
            "model_card.md": b"# card",
        },
    )
    if point_latest:
        point_latest_to(output_dir, version, card["model_sha256"])
    return folder


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("releases")
    make_release(output, "20260101T000000Z-aaaaaaaa")
    return output


def start_server(output_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A real uvicorn server process on loopback serving `output_dir`, once it answers /health: (process, url)."""
    port = free_port()
    command = [sys.executable, "-m", "deploy_code_location.serving", "--output-dir", str(output_dir)]
    process = subprocess.Popen(
        [*command, "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: http_ok(url + "/health"), 60, alive=lambda: process.poll() is None):
        process.kill()
        raise RuntimeError(process.stdout.read().decode())
    return process, url


@pytest.fixture(scope="session")
def server(release_dir):
    """The server on `release_dir`, shared by the tests that need a plain one."""
    process, url = start_server(release_dir)
    yield url
    process.terminate()
    process.wait(timeout=10)


#: The keys of `keyed_server`: one given on its command line, one in its environment.
API_KEYS = ("sk-test-command-line-0123456789", "sk-test-environment-9876543210")


@pytest.fixture(scope="session")
def keyed_server(release_dir):
    """A server that needs an API key (`--api-key` and ML_PIPELINE_API_KEYS, one key each): (url, process)."""
    env = os.environ | {settings.API_KEYS.name: f" {API_KEYS[1]} ,"}
    process, url = start_server(release_dir, "--api-key", API_KEYS[0], env=env)
    yield url, process
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def openapi(server) -> dict:
    """The server's OpenAPI document."""
    return call(server, "/openapi.json")[1]


def call(url: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
    """One HTTP request: (status, JSON body or text)."""
    request = urllib.request.Request(
        url + path, data=body, headers={"content-type": "application/json"} | (headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw, status = response.read().decode(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read().decode(), error.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def post(url: str, payload) -> tuple[int, dict]:
    """POST `payload` as JSON to /generate."""
    return call(url, "/generate", json.dumps(payload).encode())
