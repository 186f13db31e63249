"""The ETL location materialized for real on small corpora, and every bad input failing with a clear message."""

import json

import dagster as dg
import pytest

from etl_code_location.definitions import defs
from etl_code_location.defs.ingest import CorpusError, normalize_text, read_text_file
from etl_code_location.defs.split import SplitConfig, split_boundaries
from shared_code_location.contract.asset_keys import IO_MANAGER_KEY
from shared_code_location.contract.io_manager import PipelineIOManager
from shared_code_location.contract.resources import InputFilesResource
from shared_code_location.contract.token_shards import TokenShards

CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))


def materialize(input_dir, storage_dir, config=None):
    """Run the location's `etl_job` (assets and checks) in process, on test folders."""
    test_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        resources={
            IO_MANAGER_KEY: PipelineIOManager(base_uri=str(storage_dir)),
            "input_files": InputFilesResource(folder=str(input_dir)),
        },
    )
    return test_defs.resolve_job_def("etl_job").execute_in_process(run_config=config or {}, raise_on_error=False)


def failure_messages(result) -> str:
    return json.dumps([str(e.event_specific_data) for e in result.all_events if e.is_step_failure])


def test_materializes_splits_vocabulary_and_tokens(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.txt").write_text(CORPUS[:5000])
    (tmp_path / "in" / "a.txt").write_text(CORPUS[5000:], encoding="utf-8")
    (tmp_path / "in" / "notes.md").write_bytes(b"\x00\x01 not corpus")
    result = materialize(tmp_path / "in", tmp_path / "store")
    assert result.success, failure_messages(result)
    storage = tmp_path / "store" / "etl"
    vocabulary = json.loads((storage / "vocabulary.json").read_text())
    train, validation, test = (
        TokenShards.open(tmp_path / "store", f"etl/{split}_tokens.json").read(0)
        for split in ("train", "validation", "test")
    )
    corpus_text = (storage / "corpus.txt").read_text()
    assert corpus_text.startswith(CORPUS[5000:][:20])  # a.txt before b.txt
    assert len(train) + len(validation) + len(test) == len(corpus_text)
    assert 0.85 < len(train) / len(corpus_text) < 0.95
    assert vocabulary["symbols"][0] == "\ufffd" and vocabulary["vocab_size"] == len(set(corpus_text)) + 1
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "splits_are_non_empty": True,
        "splits_do_not_overlap": True,
        "vocabulary_covers_held_out_splits": True,
    }
    metadata = result.asset_materializations_for_node("etl__vocabulary")[0].metadata
    assert metadata["vocab_size"].value == vocabulary["vocab_size"]
    assert metadata["validation_oov_rate"].value == 0.0


def test_vocabulary_comes_from_train_only_and_the_coverage_check_catches_a_gap(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.txt").write_text(CORPUS + "ZZZZZZZZZZ\n" * 20)  # Z only in the held-out tail
    result = materialize(tmp_path / "in", tmp_path / "store")
    vocabulary = json.loads((tmp_path / "store" / "etl" / "vocabulary.json").read_text())
    assert "Z" not in vocabulary["symbols"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["vocabulary_covers_held_out_splits"] is False
    assert not result.success  # blocking: the tokens were not written from a bad vocabulary


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "no file matching"),
        (lambda d: (d.mkdir(), (d / "e.txt").write_text("  \n")), "e.txt is empty"),
        (lambda d: (d.mkdir(), (d / "bin.txt").write_bytes(b"\x7fELF\x00\x00" * 50)), "bin.txt looks binary"),
        (
            lambda d: (d.mkdir(), (d / "latin.txt").write_bytes("café\nolé\n".encode("latin-1"))),
            "latin.txt is not valid UTF-8: byte 3 (line 1)",
        ),
    ],
    ids=["missing-folder", "no-files", "empty-file", "binary", "not-utf8"],
)
def test_bad_inputs_fail_naming_the_problem(tmp_path, setup, message):
    setup(tmp_path / "in")
    (tmp_path / "store" / "etl").mkdir(parents=True)
    (tmp_path / "store" / "etl" / "corpus.txt").write_text("last good corpus\n")
    result = materialize(tmp_path / "in", tmp_path / "store")
    assert not result.success
    assert message in failure_messages(result)
    assert (tmp_path / "store" / "etl" / "corpus.txt").read_text() == "last good corpus\n"


def test_split_config_is_validated():
    with pytest.raises(ValueError, match="leaves nothing for the test split"):
        SplitConfig(train_fraction=0.9, validation_fraction=0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        SplitConfig(train_fraction=0.0)


def test_split_boundaries_are_contiguous_and_on_line_starts():
    train_end, validation_end = split_boundaries(CORPUS, 0.9, 0.05)
    assert CORPUS[train_end - 1] == "\n" and CORPUS[validation_end - 1] == "\n"
    assert 0 < train_end < validation_end < len(CORPUS)


def test_normalization_and_bom(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("\ufeffCafe\u0301\r\nline\r".encode())
    assert normalize_text(read_text_file(path)) == "Caf\u00e9\nline\n"
    with pytest.raises(CorpusError):
        (tmp_path / "y.txt").write_bytes(b"\xff\xfe")
        read_text_file(tmp_path / "y.txt")
