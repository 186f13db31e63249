"""The shared IO manager on a local folder and on an fsspec in-memory filesystem, through real materializations."""

import json
import uuid

import dagster as dg
import numpy as np
import pytest

from shared_code_location.contract.asset_keys import IO_MANAGER_KEY, TRAIN_TOKENS, VOCABULARY
from shared_code_location.contract.io_manager import PipelineIOManager
from shared_code_location.contract.storage_formats import StorageFormat, StorageFormatError, TensorBundle
from shared_code_location.contract.token_shards import TokenShards, store_array


def _assets(bad_json: bool = False):
    @dg.asset(key=VOCABULARY.key, metadata=VOCABULARY.metadata)
    def vocabulary() -> dict:
        return {"symbols": ["a", "b"]} if not bad_json else {"oops": {1, 2}}

    @dg.asset(key=TRAIN_TOKENS.key, metadata=TRAIN_TOKENS.metadata, required_resource_keys={IO_MANAGER_KEY})
    def train_tokens(context: dg.AssetExecutionContext) -> dict:
        # The shard beside the data; the manifest through the IO manager (what the ETL does, file by file).
        return store_array(context.resources.io_manager.root, "etl/shards/t.npy", np.arange(10), 12, "train")

    @dg.asset(metadata={"storage_format": "safetensors"})
    def weights() -> TensorBundle:
        return TensorBundle({"w": np.ones((2, 3), dtype=np.float32)}, {"config": {"layers": 2}})

    @dg.asset(metadata={"storage_format": "text"})
    def text() -> str:
        return "héllo\n"

    @dg.asset(ins={"vocabulary": dg.AssetIn(VOCABULARY.key), "tokens": dg.AssetIn(TRAIN_TOKENS.key)})
    def consumer(vocabulary: dict, tokens: TokenShards, weights: TensorBundle, text: str) -> dict:
        return {
            "symbols": vocabulary["symbols"],
            "tokens": tokens.read(0).tolist(),
            "weights_shape": list(weights.tensors["w"].shape),
            "config": weights.metadata["config"],
            "text": text,
        }

    return [vocabulary, train_tokens, weights, text, consumer]


@pytest.mark.parametrize("location", ["local", "memory"])
def test_every_format_round_trips(tmp_path, location, monkeypatch):
    monkeypatch.setenv("ML_PIPELINE_TOKEN_CACHE", str(tmp_path / "cache"))  # where shards in object storage land
    base = str(tmp_path) if location == "local" else f"memory://test-{uuid.uuid4().hex}"
    result = dg.materialize(_assets(), resources={IO_MANAGER_KEY: PipelineIOManager(base_uri=base)})
    assert result.success
    assert result.output_for_node("consumer") == {
        "symbols": ["a", "b"],
        "tokens": list(range(10)),
        "weights_shape": [2, 3],
        "config": {"layers": 2},
        "text": "héllo\n",
    }
    from upath import UPath

    root = UPath(base)
    assert (root / "etl" / "vocabulary.json").exists()
    assert (root / "etl" / "train_tokens.json").exists() and (root / "etl" / "shards" / "t.npy").exists()
    assert (root / "weights.safetensors").exists()
    assert (root / "text.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (root / "consumer.json").exists()
    if location == "local":  # readable by other users (a server running as another uid), not a temp file's 0600
        assert (tmp_path / "etl" / "vocabulary.json").stat().st_mode & 0o777 == 0o644
    # Each materialization links to its file.
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == TRAIN_TOKENS.key]
    uri = event.materialization.metadata["uri"].value
    assert uri.endswith("etl/train_tokens.json")
    assert uri.startswith("file://" if location == "local" else "memory://")


def test_a_failed_write_leaves_the_last_good_value(tmp_path):
    resources = {IO_MANAGER_KEY: PipelineIOManager(base_uri=str(tmp_path))}
    assert dg.materialize(_assets()[:1], resources=resources).success
    good = (tmp_path / "etl" / "vocabulary.json").read_bytes()
    result = dg.materialize(_assets(bad_json=True)[:1], resources=resources, raise_on_error=False)
    assert not result.success
    assert (tmp_path / "etl" / "vocabulary.json").read_bytes() == good
    assert not [p for p in (tmp_path / "etl").iterdir() if p.name.endswith(".tmp")]


def test_no_pickle_formats_refuse_objects():
    from shared_code_location.contract.storage_formats import encode

    with pytest.raises(StorageFormatError):
        encode(StorageFormat.NUMPY, np.array([object()], dtype=object))
    with pytest.raises(StorageFormatError):
        encode(StorageFormat.JSON, object())
    with pytest.raises(StorageFormatError):
        encode(StorageFormat.JSON, float("nan"))


def test_loading_an_unmaterialized_asset_names_it(tmp_path):
    @dg.asset(ins={"vocabulary": dg.AssetIn(VOCABULARY.key)})
    def reader(vocabulary: dict) -> dict:
        return vocabulary

    result = dg.materialize(
        [VOCABULARY.spec(), reader],
        resources={IO_MANAGER_KEY: PipelineIOManager(base_uri=str(tmp_path))},
        selection=[reader.key],
        raise_on_error=False,
    )
    assert not result.success
    message = json.dumps([str(e.event_specific_data) for e in result.all_events if e.is_step_failure])
    assert "etl/vocabulary has not been materialized yet" in message


def test_the_shared_resources_start_without_a_deprecation_warning(tmp_path, monkeypatch):
    """Every location, and every location `new-location` scaffolds, binds these: a nested resource with defaults
    (the object store) made Dagster read `InitResourceContext.dagster_run`, deprecated, in every run and test."""
    import warnings

    from shared_code_location.contract.resources import pipeline_resources

    monkeypatch.setenv("ML_PIPELINE_STORAGE_URI", str(tmp_path / "pipeline"))
    for resources in ({IO_MANAGER_KEY: PipelineIOManager(base_uri=str(tmp_path / "direct"))}, pipeline_resources()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert dg.materialize(_assets()[:2], resources=resources).success
        deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
        assert deprecated == [], deprecated
