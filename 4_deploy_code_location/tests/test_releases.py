"""`python -m deploy_code_location.releases` (what `cli.py releases` runs): list, promote, roll back; a release that
fails its checks is refused and nothing moves; a running server swaps without failing a request in flight; the same
on object storage."""

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import call, make_release, post, start_server
from deploy_code_location import releases
from deploy_code_location.release_store import read_pointer
from shared_code_location.contract.storage import storage_path

OLD, MIDDLE, NEW = "20260101T000000Z-11111111", "20260201T000000Z-22222222", "20260301T000000Z-33333333"


@pytest.fixture(scope="module")
def three_releases(tmp_path_factory):
    """Three releases, made in order (so the newest is live and the other two are its history)."""
    output = tmp_path_factory.mktemp("three")
    for seed, version in enumerate((OLD, MIDDLE, NEW)):
        make_release(output, version, seed=seed)
    return output


def run(output_dir, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deploy_code_location.releases", "--output-dir", str(output_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_list_shows_every_release_and_the_live_one(three_releases):
    result = run(three_releases, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "EXPERIMENT", "VAL", "LOSS", "TEST", "LOSS", "PARITY", "CREATED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:3]] == [OLD, MIDDLE]
    assert lines[3].split()[:4] == ["*", NEW, "seed-2", "3.0200"]
    assert "2026-03-01 00:00:00" in lines[3] and lines[-1] == f"live: {NEW} (* above)"


def test_promote_rollback_and_a_server_that_follows_without_failing_a_request(three_releases):
    process, url = start_server(three_releases)
    errors, answered, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                status, body = post(url, {"prompt": "ROMEO", "max_new_tokens": 30})
            except Exception as error:  # a reset or refused connection is a failed request too
                status, body = None, repr(error)
            answered.append(status)
            if status != 200:
                errors.append(body)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        promoted = run(three_releases, "promote", OLD)
        assert promoted.returncode == 0, promoted.stderr
        assert promoted.stdout.startswith(f"promoted {OLD} (was {NEW})")
        assert read_pointer(three_releases)["history"] == [NEW, MIDDLE]
        assert _serves(url, OLD)
        rolled = run(three_releases, "rollback")
        assert rolled.returncode == 0 and rolled.stdout.startswith(f"rolled back to {NEW} (was {OLD})")
        assert read_pointer(three_releases)["history"] == [MIDDLE]  # a second rollback goes further back
        assert _serves(url, NEW)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        process.kill()
        process.wait()
    assert errors == [] and len(answered) >= 4


def _serves(url: str, version: str) -> bool:
    deadline = time.monotonic() + 20
    while call(url, "/health")[1]["release"] != version and time.monotonic() < deadline:
        time.sleep(0.1)
    return call(url, "/health")[1]["release"] == version


def test_a_release_that_fails_its_checks_is_refused_and_nothing_moves(tmp_path, three_releases):
    output = tmp_path / "out"
    shutil.copytree(three_releases, output)
    before = (output / "latest.json").read_text()
    card_path = output / "releases" / OLD / "model_card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({k: v for k, v in card.items() if k != "checks"}))  # an older release
    damaged = output / "releases" / MIDDLE / "model.onnx"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    refused = run(output, "promote", OLD)
    assert refused.returncode == 1
    assert f"refusing to promote {OLD}: it fails its checks; latest.json is unchanged" in refused.stderr
    assert "records no ONNX parity check" in refused.stderr and "cli.py run --from 4_deploy --force" in refused.stderr
    refused = run(output, "promote", MIDDLE)
    assert refused.returncode == 1 and "does not load and generate in ONNX Runtime" in refused.stderr
    missing = run(output, "promote", "20990101T000000Z-nope")
    assert missing.returncode == 1 and "no release '20990101T000000Z-nope'" in missing.stderr
    assert (output / "latest.json").read_text() == before


def test_rollback_with_nothing_before_says_so(tmp_path):
    make_release(tmp_path, OLD)
    result = run(tmp_path, "rollback")
    assert result.returncode == 1 and f"records no release before {OLD}" in result.stderr
    assert "no releases in" in run(tmp_path / "empty", "list").stdout


def test_the_same_on_object_storage(three_releases):
    store = storage_path("memory://releases-test/out")
    for path in three_releases.rglob("*"):
        if path.is_file():
            (store / path.relative_to(three_releases).as_posix()).write_bytes(path.read_bytes())
    (store / "latest.json").write_text((three_releases / "latest.json").read_text())
    assert releases.promote(store, MIDDLE).startswith(f"promoted {MIDDLE}")
    assert read_pointer(store)["version"] == MIDDLE
    assert releases.rollback(store).startswith(f"rolled back to {NEW} (was {MIDDLE})")
    assert next(line for line in releases.list_table(store).splitlines() if NEW in line).startswith("*")
