"""The ETL location materialized for real on small folders, as `cli.py run` drives it (`runs.run_definitions`): one
partition per file, only what changed re-runs, and bad input fails its own partition with a clear message."""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from etl_code_location.definitions import defs
from etl_code_location.defs.checks import max_held_out_oov_rate
from etl_code_location.defs.ingest import normalize_text
from shared_code_location.contract.asset_keys import IO_MANAGER_KEY
from shared_code_location.contract.io_manager import PipelineIOManager
from shared_code_location.contract.resources import InputFilesResource
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.model.tokenizer import CharTokenizer
from shared_code_location.runtime.runs import run_definitions

LINES = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))
SPLITS = ("train", "validation", "test")


def run(folder: Path, force: bool = False) -> dict:
    """`cli.py run --only 1_etl` on `folder`'s input files (in/), storage (store/) and instance (home/)."""
    test_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        executor=defs.executor,
        resources={
            IO_MANAGER_KEY: PipelineIOManager(base_uri=str(folder / "store")),
            "input_files": InputFilesResource(folder=str(folder / "in")),
        },
    )
    (folder / "home").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(folder / "home")) as instance:
        return run_definitions(test_defs, {}, force, instance)


def split_text(folder: Path, split: str) -> dict[str, str]:
    """`{file: text}` of `split` as its manifest and the vocabulary decode it."""
    tokens = TokenShards.open(folder / "store", f"etl/{split}_tokens.json")
    tokenizer = CharTokenizer.from_json(json.loads((folder / "store" / "etl" / "vocabulary.json").read_text()))
    texts: dict[str, str] = {}
    for index, shard in enumerate(tokens.shards):
        texts[shard.file] = texts.get(shard.file, "") + tokenizer.decode(tokens.read(index))
    return texts


def files_run(report: dict) -> list[str]:
    return sorted(target.split("[")[1][:-1] for target in report["stale"] if target.startswith("etl/file_tokens["))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """Two files ingested once: the state each test below starts from (copied)."""
    folder = tmp_path_factory.mktemp("ingested")
    (folder / "in").mkdir()
    (folder / "in" / "b.txt").write_text(LINES[:5000])
    (folder / "in" / "a.txt").write_text(LINES[5000:], encoding="utf-8")
    (folder / "in" / "notes.md").write_bytes(b"\x00\x01 not corpus")
    report = run(folder)
    assert report["success"], report["failures"]
    return folder


@pytest.fixture
def folder(ingested, tmp_path) -> Path:
    return Path(shutil.copytree(ingested, tmp_path / "copy"))


def test_each_file_is_split_and_tokenized_in_its_own_partition(folder):
    texts = {split: split_text(folder, split) for split in SPLITS}
    for name in ("a.txt", "b.txt"):
        original = normalize_text((folder / "in" / name).read_text())  # one trailing newline added
        # Contiguous blocks of each file: train, then validation, then test, cut at line starts.
        assert texts["train"][name] + texts["validation"][name] + texts["test"][name] == original
        assert texts["validation"][name].startswith("Line ") and texts["test"][name].startswith("Line ")
        assert 0.85 < len(texts["train"][name]) / len(original) < 0.95
    vocabulary = json.loads((folder / "store" / "etl" / "vocabulary.json").read_text())
    train = "".join(texts["train"].values())
    assert vocabulary["symbols"] == ["\ufffd", *sorted(set(train))]  # as CharTokenizer.fit makes it
    shards = TokenShards.open(folder / "store", "etl/train_tokens.json")
    assert [shard.file for shard in shards.shards] == ["a.txt", "b.txt"] and shards.dtype.name == "uint8"
    assert run(folder)["stale"] == {}  # nothing changed: nothing runs


def test_a_file_added_runs_its_partition_alone(folder):
    before = TokenShards.open(folder / "store", "etl/train_tokens.json").shards
    (folder / "in" / "c.txt").write_text(LINES[:3000].upper())
    report = run(folder)
    assert report["success"], report["failures"]
    assert files_run(report) == ["c.txt"] and report["stale"]["etl/file_tokens[c.txt]"] == "never materialized"
    assert {"etl/vocabulary", "etl/train_tokens", "etl/validation_tokens", "etl/test_tokens"} <= set(report["stale"])
    after = TokenShards.open(folder / "store", "etl/train_tokens.json").shards
    assert [s.file for s in after] == ["a.txt", "b.txt", "c.txt"]
    # The other files' shards are the same files; only their id maps grew with the vocabulary (new capitals).
    assert [(s.path, s.sha256) for s in after[:2]] == [(s.path, s.sha256) for s in before]
    assert "".join(split_text(folder, split)["c.txt"] for split in SPLITS) == normalize_text(LINES[:3000].upper())


def test_a_changed_file_reruns_its_partition_and_new_characters_get_new_ids(folder):
    vocabulary_before = json.loads((folder / "store" / "etl" / "vocabulary.json").read_text())["symbols"]
    a_shards = [s for s in TokenShards.open(folder / "store", "etl/train_tokens.json").shards if s.file == "a.txt"]
    (folder / "in" / "b.txt").write_text("Ωmega and ßeta.\n" * 40 + LINES[:3000])
    report = run(folder)
    assert report["success"], report["failures"]
    assert files_run(report) == ["b.txt"]
    assert report["stale"]["etl/file_tokens[b.txt]"] == "file b.txt changed since it was read"
    symbols = json.loads((folder / "store" / "etl" / "vocabulary.json").read_text())["symbols"]
    assert symbols[: len(vocabulary_before)] == vocabulary_before  # every id kept
    assert symbols[len(vocabulary_before) :] == ["ß", "Ω"]  # new ones appended, in code-point order
    after = TokenShards.open(folder / "store", "etl/train_tokens.json")
    assert next(s for s in after.shards if s.file == "a.txt").sha256 == a_shards[0].sha256
    assert split_text(folder, "train")["b.txt"].startswith("Ωmega and ßeta.\n")


def test_a_removed_file_leaves_the_manifests_and_its_shards(folder):
    (folder / "in" / "a.txt").unlink()
    report = run(folder)
    assert report["success"], report["failures"]
    assert files_run(report) == [] and "etl/vocabulary" in report["stale"]
    assert [s.file for s in TokenShards.open(folder / "store", "etl/train_tokens.json").shards] == ["b.txt"]
    assert not (folder / "store" / "etl" / "shards" / "a.txt").exists()
    assert run(folder)["stale"] == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"  \n", "bad.txt is empty"),
        (b"\x7fELF\x00\x00" * 50, "bad.txt looks binary"),
        ("caf\u00e9\nol\u00e9\n".encode("latin-1"), "bad.txt is not valid UTF-8: byte 3 (line 1) is 0xe9"),
    ],
    ids=["empty", "binary", "not-utf8"],
)
def test_a_bad_file_fails_its_own_partition_naming_it_and_the_last_good_data_stays(folder, content, message):
    etl = folder / "store" / "etl"
    before = {path.name: digest(path) for path in etl.glob("*.json")}
    (folder / "in" / "bad.txt").write_bytes(content)
    (folder / "in" / "good.txt").write_text(LINES[:2000])
    report = run(folder)
    assert not report["success"]
    [failure] = report["failures"]
    assert failure["step"] == "etl__file_tokens[bad.txt]" and message in failure["error"]
    assert str(folder / "in" / "bad.txt") in failure["error"]
    assert files_run(report) == ["bad.txt", "good.txt"]  # the other new file was ingested all the same
    assert (etl / "file_tokens" / "good.txt.json").exists() and not (etl / "file_tokens" / "bad.txt.json").exists()
    assert {path.name: digest(path) for path in etl.glob("*.json")} == before  # vocabulary, manifests untouched


def test_a_missing_or_empty_input_folder_is_named(tmp_path):
    for make, message in [(lambda: None, "does not exist"), (lambda: (tmp_path / "in").mkdir(), "no file matching")]:
        make()
        report = run(tmp_path)
        assert not report["success"] and message in report["failures"][0]["error"], report
        assert str(tmp_path / "in") in report["failures"][0]["error"]


def test_the_coverage_check_names_each_missing_character_and_its_limit_is_a_setting(folder, monkeypatch):
    # Tabs only in the held-out end of a file: the check says so, how many and where, not only a rate.
    (folder / "in" / "c.txt").write_text(LINES[:9000] + "\tindented\n" * 30)
    report = run(folder)
    assert not report["success"]
    [failure] = report["failures"]
    assert failure["check"] == "vocabulary_covers_held_out_splits"
    line = LINES[:9000].count("\n") + 1
    assert failure["metadata"]["missing"] == f"'\\t' ×30 (first: c.txt line {line:,}, character 9,000)"
    assert failure["metadata"]["limit"] == "0.001"
    # A corpus whose held-out text is allowed more: the same files pass with the limit raised. The failed gate left
    # the vocabulary stale, so the check runs again rather than being taken as settled.
    monkeypatch.setenv("ML_PIPELINE_MAX_HELD_OUT_OOV_RATE", "0.5")
    again = run(folder)
    assert again["success"], again["failures"]
    assert again["stale"]["etl/vocabulary"] == "blocking check vocabulary_covers_held_out_splits did not pass"
    monkeypatch.setenv("ML_PIPELINE_MAX_HELD_OUT_OOV_RATE", "lots")
    with pytest.raises(ValueError, match="ML_PIPELINE_MAX_HELD_OUT_OOV_RATE='lots' is not a fraction between 0 and 1"):
        max_held_out_oov_rate()
