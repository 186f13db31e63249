"""The pipeline on object storage for real: SeaweedFS's S3 API, every value, checkpoint and release in a bucket and
nothing in local asset storage, the server following the release there; and object storage that cannot be used
(wrong credentials, a missing bucket, an unreachable endpoint) failing with its URI and the problem, the last good
release untouched."""

import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, isolated, run_cli
from object_store import seaweedfs
from shared_code_location import settings
from shared_code_location.runtime.net import free_port, http_ok, wait_until

BUCKET = "pipeline"
STORAGE_URI = f"s3://{BUCKET}/assets"
RELEASES_URI = f"s3://{BUCKET}/serving"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), buckets=(BUCKET,)) as server:
        yield server


def bucket_env(folder, store, **overrides: str) -> dict[str, str]:
    """The pipeline's environment with storage and releases in the bucket, the instance in `folder`."""
    values = {settings.STORAGE_URI.name: STORAGE_URI, settings.OUTPUT_DIR.name: RELEASES_URI}
    return isolated(folder) | store.env() | values | overrides


@pytest.fixture(scope="module")
def bucket_pipeline(store, tmp_path_factory):
    """The whole pipeline, tiny, once, with its storage and releases in the bucket: (environment, folder, result)."""
    folder = tmp_path_factory.mktemp("bucket-pipeline")
    env = bucket_env(folder, store)
    return env, folder, run_cli("run", "--preset", "tiny", env=env)


def test_the_whole_pipeline_keeps_its_data_and_releases_in_the_bucket(bucket_pipeline, store):
    _, folder, result = bucket_pipeline
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Nothing in local asset storage or a local release folder; the instance (runs, logs) is local, as it should be.
    assert not (folder / "storage").exists() and not (folder / "releases").exists()
    fs = store.filesystem()
    stored = {path.removeprefix(f"{BUCKET}/") for path in fs.find(BUCKET)}
    for key in ("assets/etl/vocabulary.json", "assets/etl/train_tokens.json", "assets/deploy/onnx_model.onnx"):
        assert key in stored, sorted(stored)
    assert any(p.startswith("assets/etl/shards/tinyshakespeare.txt/") and p.endswith(".npy") for p in stored)
    assert any(p.startswith("assets/model/trained_model/") and p.endswith(".safetensors") for p in stored)
    latest = json.loads(fs.cat(f"{RELEASES_URI}/latest.json"))
    for name in ("model.onnx", "vocabulary.json", "model_card.json", "model_card.md"):
        assert f"serving/releases/{latest['version']}/{name}" in stored
    assert f"latest release: {RELEASES_URI}/releases/{latest['version']}" in result.stdout


@contextlib.contextmanager
def serving(env: dict[str, str], ready: bool = False):
    """`cli.py serve` on a free port, once it is live (and ready, if asked); stopped after."""
    port = free_port()
    command = [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(
            lambda: http_ok(url + ("/ready" if ready else "/health")), 90, alive=lambda: server.poll() is None
        )
        assert up, server.stdout.read().decode() if server.poll() is not None else "not up"
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(url: str) -> tuple[int, object]:
    """GET `url`: (status, JSON body)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_server_serves_the_release_in_the_bucket(bucket_pipeline, store):
    env, _, result = bucket_pipeline
    assert result.returncode == 0
    latest = json.loads(store.filesystem().cat(f"{RELEASES_URI}/latest.json"))
    with serving(env, ready=True) as url:
        body = {"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 20, "seed": 1}
        request = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})  # fmt: skip
        completion = json.load(urllib.request.urlopen(request, timeout=30))
        assert len(completion["choices"][0]["text"]) == 20 and completion["system_fingerprint"] == latest["version"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong secret", "access denied"),
        ("missing bucket", "the bucket 'no-such-bucket' does not exist"),
        ("unreachable endpoint", "cannot be reached"),
    ],
)
def test_unusable_object_storage_fails_naming_the_uri_and_keeps_the_last_release(
    bucket_pipeline, store, tmp_path, case, expected
):
    _, _, result = bucket_pipeline
    assert result.returncode == 0
    fs = store.filesystem()
    pointer_before = fs.cat(f"{RELEASES_URI}/latest.json")
    releases_before = sorted(fs.ls(f"{RELEASES_URI}/releases"))
    overrides = {
        "wrong secret": {settings.S3_SECRET_ACCESS_KEY.name: "not-the-secret"},
        "missing bucket": {
            settings.STORAGE_URI.name: "s3://no-such-bucket/assets",
            settings.OUTPUT_DIR.name: "s3://no-such-bucket/serving",
        },
        "unreachable endpoint": {settings.S3_ENDPOINT_URL.name: f"http://127.0.0.1:{free_port()}"},
    }[case]
    env = bucket_env(tmp_path, store, **overrides)
    for location in ("1_etl", "4_deploy"):  # the first location, and the one that writes releases
        failed = run_cli("run", "--only", location, "--force", env=env, timeout=300)
        assert failed.returncode != 0
        cause = failed.stderr  # the CLI's error: the location, the step and its cause
        assert env[settings.STORAGE_URI.name] in cause and expected in cause, failed.stdout[-2000:] + cause
        assert "botocore" not in cause and "Traceback" not in cause, cause
    if case == "missing bucket":
        # The server waits for the bucket (the pipeline's first release creates it): live, not ready, and says why.
        with serving(env) as url:
            status, body = get(url + "/ready")
            assert status == 503 and expected in json.dumps(body), body
    else:  # The server started on unusable storage says so and exits, instead of serving nothing.
        command = [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(free_port())]
        served = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert served.returncode != 0 and expected in served.stderr and "Traceback" not in served.stderr, served.stderr
    assert fs.cat(f"{RELEASES_URI}/latest.json") == pointer_before
    assert sorted(fs.ls(f"{RELEASES_URI}/releases")) == releases_before
