"""The server on a release the pipeline really made: it scores the held-out test split as the evaluation location's
PyTorch model did, by itself and through the real lm-evaluation-harness; and `cli.py releases` lists, promotes,
rolls back and refuses."""

import json
import math
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from conftest import ROOT, run_cli
from shared_code_location import settings
from shared_code_location.runtime.net import free_port, http_ok, wait_until

DEPLOY_PYTHON = ROOT / "4_deploy_code_location" / ".venv" / "bin" / "python"


def _latest(releases) -> tuple[dict, dict]:
    pointer = json.loads((releases / "latest.json").read_text())
    return pointer, json.loads((releases / pointer["path"] / "model_card.json").read_text())


@pytest.fixture(scope="module")
def pipeline_server(tiny_pipeline):
    """`cli.py serve` on the tiny pipeline's releases: (its url, the pipeline's folder)."""
    env, folder, result = tiny_pipeline
    assert result.returncode == 0, result.stdout + result.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "cli.py"), "serve", "--port", str(port)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: http_ok(url + "/ready"), 60, alive=lambda: process.poll() is None)
    yield url, folder
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def test_split_ids(tiny_pipeline, tmp_path_factory):
    """The test split's vocabulary ids as one `.npy`, read from its `token-shards/v1` manifest by the shared reader
    (`TokenShards`) in the deploy location's venv: what the scorer and the harness decode with the release's
    vocabulary."""
    _, folder, _ = tiny_pipeline
    path = tmp_path_factory.mktemp("test_split") / "test_ids.npy"
    script = (
        "import sys, numpy as np; from pathlib import Path;"
        "from shared_code_location.contract.token_shards import TokenShards;"
        "split = TokenShards.open(Path(sys.argv[1]), 'etl/test_tokens.json');"
        "np.save(sys.argv[2], np.concatenate([ids for _, _, ids in split.chunks(1 << 20)]))"
    )
    subprocess.run([str(DEPLOY_PYTHON), "-c", script, str(folder / "storage"), str(path)], check=True)
    return path


def test_the_server_scores_the_test_split_as_the_evaluation_did(pipeline_server, test_split_ids):
    url, folder = pipeline_server
    pointer, card = _latest(folder / "releases")
    release = folder / "releases" / pointer["path"]
    tokens = test_split_ids
    block = str(card["model_config"]["block_size"])
    scorer = [str(DEPLOY_PYTHON), str(ROOT / "tests" / "serving_scorer.py"), url, str(tokens)]
    answer = subprocess.run([*scorer, str(release / "vocabulary.json"), block], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    served = json.loads(answer.stdout)
    evaluated = card["metrics"]["model"]
    print(
        f"\nserved ONNX model: {served['loss']:.6f} nats/char over {served['tokens']} characters "
        f"({served['requests']} requests); evaluation report (PyTorch): {evaluated['loss']:.6f} over "
        f"{evaluated['tokens']}; difference {abs(served['loss'] - evaluated['loss']):.2e}"
    )
    assert served["tokens"] == evaluated["tokens"]  # the same windows
    assert abs(served["loss"] - evaluated["loss"]) < 1e-3


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _continuation_logprob(url: str, context: str, continuation: str, window: int) -> float:
    """log p(continuation | context) scored by the server itself (echo, no generation), on the last `window`
    characters of the two, as the harness sends them."""
    prompt = (context + continuation)[-window:]
    answer = _post(url, "/v1/completions", {"model": "char-transformer", "prompt": prompt, "max_tokens": 0,
                                            "echo": True, "logprobs": 0})  # fmt: skip
    return sum(answer["choices"][0]["logprobs"]["token_logprobs"][len(prompt) - len(continuation) :])


def test_lm_evaluation_harness_scores_the_held_out_split_through_the_server(pipeline_server, test_split_ids, tmp_path):
    """The real lm-evaluation-harness, in its own environment, against the server: `local-completions` with the
    server's tokenizer (`tokenizer_backend=remote`: /tokenizer_info, /tokenize, /detokenize) and text prompts
    (`tokenized_requests=False`), one process for both tasks. The rolling task's bits per byte, in nats per
    character, is the evaluation report's test loss within 1 %; each multiple-choice answer's log-likelihood is the
    server's own score of it."""
    from pipeline_cli.environments import TEST_REQUIREMENTS, test_environment

    url, folder = pipeline_server
    pointer, card = _latest(folder / "releases")
    release, tokens = folder / "releases" / pointer["path"], test_split_ids
    harness = test_environment(TEST_REQUIREMENTS[0]) / "bin" / "python"
    newline = _post(url, "/tokenize", {"prompt": "\n"})["tokens"][0]
    max_model_len = _post(url, "/tokenize", {"prompt": "a"})["max_model_len"]
    model_args = ",".join([
        f"base_url={url}/v1/completions", "model=char-transformer", "tokenizer_backend=remote",
        "tokenized_requests=False", f"max_length={max_model_len + 2}", f"custom_prefix_token_id={newline}",
    ])  # fmt: skip
    tasks, output = tmp_path / "tasks", tmp_path / "results.json"
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [str(harness), str(ROOT / "tests" / "harness" / "run.py"), str(tokens), str(release / "vocabulary.json"),
               str(tasks), model_args, str(output)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    evaluated = json.loads(output.read_text())
    results = evaluated["results"]
    documents = [json.loads(line) for line in (tasks / "heldout_rolling.jsonl").read_text().splitlines()]
    text = "".join(doc["text"] for doc in documents)
    bits_per_byte = results["heldout_rolling"]["bits_per_byte,none"]
    nats_per_character = bits_per_byte * math.log(2) * len(text.encode("utf-8")) / len(text)
    report = card["metrics"]["model"]["loss"]
    accuracy = results["heldout_choice"]["acc,none"]
    print(f"\nlm-eval heldout_rolling: {bits_per_byte:.6f} bits/byte over {len(text)} characters = "
          f"{nats_per_character:.6f} nats/char; evaluation report: {report:.6f} nats/char "
          f"({100 * (nats_per_character / report - 1):+.3f} %); heldout_choice accuracy {accuracy:.3f}")  # fmt: skip
    assert abs(nats_per_character / report - 1) < 0.01
    samples = evaluated["samples"]["heldout_choice"]
    assert len(samples) == 40 and accuracy > 0.25  # better than chance
    for sample in samples[:8]:
        doc, harness_scores = sample["doc"], [float(resp[0][0]) for resp in sample["resps"]]
        # The harness moves the context's trailing whitespace to the continuation, and keeps max_length - 1 tokens.
        context = doc["context"].rstrip()
        moved = doc["context"][len(context) :]
        ours = [_continuation_logprob(url, context, moved + c, max_model_len + 1) for c in doc["choices"]]
        assert harness_scores == pytest.approx(ours, abs=1e-4)


def _copy_release(releases, version: str, new_version: str):
    folder = releases / "releases" / new_version
    shutil.copytree(releases / "releases" / version, folder)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps(card | {"version": new_version}))
    return folder


def test_releases_list_promote_rollback_and_refuse(tiny_pipeline, tmp_path):
    env, folder, _ = tiny_pipeline
    pointer, _ = _latest(folder / "releases")
    output = tmp_path / "releases"
    shutil.copytree(folder / "releases", output)
    # The shared pipeline may have released more than once (other tests retrain): start from a history of none.
    (output / "latest.json").write_text(json.dumps(pointer | {"history": []}))
    env = env | {settings.OUTPUT_DIR.name: str(output)}
    live, copy = pointer["version"], "29990101T000000Z-copy0001"
    _copy_release(output, live, copy)
    broken = _copy_release(output, live, "29990202T000000Z-broken01")
    (broken / "model.onnx").write_bytes(b"not onnx")

    listing = run_cli("releases", env=env)
    print(f"\n$ cli.py releases\n{listing.stdout}")
    assert listing.returncode == 0, listing.stderr
    rows = {row.split()[-7]: row for row in listing.stdout.splitlines()[1:-1]}  # by version
    assert rows[live].startswith(f"*  {live}") and not rows[copy].startswith("*")
    assert "PARITY" in listing.stdout.splitlines()[0] and listing.stdout.splitlines()[-1] == f"live: {live} (* above)"

    promoted = run_cli("releases", "promote", copy, env=env)
    print(f"$ cli.py releases promote {copy}\n{promoted.stdout}{promoted.stderr}")
    assert promoted.returncode == 0 and promoted.stdout.startswith(f"promoted {copy} (was {live})")
    assert json.loads((output / "latest.json").read_text())["version"] == copy

    refused = run_cli("releases", "promote", broken.name, env=env)
    print(f"$ cli.py releases promote {broken.name}\n{refused.stderr}")
    assert refused.returncode == 1 and "fails its checks" in refused.stderr
    assert json.loads((output / "latest.json").read_text())["version"] == copy

    rolled = run_cli("releases", "rollback", env=env)
    print(f"$ cli.py releases rollback\n{rolled.stdout}{rolled.stderr}")
    assert rolled.returncode == 0 and rolled.stdout.startswith(f"rolled back to {live} (was {copy})")
    again = run_cli("releases", "rollback", env=env)
    print(f"$ cli.py releases rollback\n{again.stderr}")
    assert again.returncode == 1 and "records no release before" in again.stderr
