"""Token shards for real: written atomically, read memory-mapped or through the local cache of object storage, and
turned into training batches and evaluation windows exactly as one token stream would be."""

import dataclasses
import uuid

import numpy as np
import pytest
import torch
from upath import UPath

from shared_code_location.contract.storage_formats import StorageFormat, StorageFormatError, encode
from shared_code_location.contract.token_shards import (
    Shard,
    TokenShards,
    TokenShardsError,
    manifest,
    store_array,
    write_shard,
)
from shared_code_location.model import token_windows
from shared_code_location.model.token_windows import BatchSampler
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig, window_metrics

VOCAB = 70
IDS = np.random.default_rng(0).integers(1, VOCAB, 6000).astype(np.uint16)


def file_shard(root, name: str, ids: np.ndarray) -> Shard:
    """`ids` stored as the ETL stores a file's split: each character as its index among the file's own."""
    characters = np.unique(ids)
    stored = np.searchsorted(characters, ids).astype(np.uint8)
    _, digest = write_shard(root, f"etl/shards/{name}.npy", [stored[:1000], stored[1000:]], len(stored), np.uint8)
    return Shard(f"etl/shards/{name}.npy", name, len(stored), digest, tuple(int(c) for c in characters))


def two_shards(root) -> TokenShards:
    shards = [file_shard(root, "a", IDS[:3500]), file_shard(root, "b", IDS[3500:])]
    return TokenShards(manifest("train", shards, "vocabulary-version", VOCAB), root)


def test_a_split_reads_back_as_vocabulary_ids_from_memory_mapped_shards(tmp_path):
    split = two_shards(tmp_path)
    assert split.tokens == len(IDS) and split.dtype == np.uint8 and split.vocabulary_version == "vocabulary-version"
    assert isinstance(split.stored_ids(0), np.memmap)  # nothing read until used
    assert np.array_equal(np.concatenate([split.read(0), split.read(1)]), IDS)
    assert np.array_equal(split.read(1, 10, 20), IDS[3510:3520])
    assert np.array_equal(np.concatenate([ids for _, _, ids in split.chunks(999)]), IDS)
    # The fingerprint follows the tokens: a different id map (a vocabulary that changed) is different data.
    other_map = dataclasses.replace(split.shards[1], ids=tuple(reversed(split.shards[1].ids)))
    remapped = manifest("train", [split.shards[0], other_map], "v2", VOCAB)
    assert TokenShards(remapped, tmp_path).fingerprint != split.fingerprint
    with pytest.raises(TokenShardsError, match="outside a vocabulary of 10"):
        manifest("train", split.shards, None, 10)
    with pytest.raises(StorageFormatError, match="not a token-shards/v1 manifest"):
        encode(StorageFormat.TOKEN_SHARDS, {"shards": []})


def test_object_storage_shards_are_fetched_once_into_the_cache_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_PIPELINE_TOKEN_CACHE", str(tmp_path / "cache"))
    root = UPath(f"memory://shards-{uuid.uuid4().hex}")
    stored = store_array(root, "etl/shards/t.npy", IDS, VOCAB, "test")
    assert np.array_equal(TokenShards(stored, root).read(0), IDS)
    [cached] = (tmp_path / "cache").iterdir()
    assert cached.name == stored["shards"][0]["sha256"] + ".npy"
    (root / "etl" / "shards" / "t.npy").unlink()  # from the cache now, not the store
    assert np.array_equal(TokenShards(stored, root).read(0), IDS)
    cached.unlink()
    store_array(root, "etl/shards/t.npy", IDS[::-1].copy(), VOCAB, "test")  # other bytes under the same name
    with pytest.raises(TokenShardsError, match=r"etl/shards/t\.npy: sha256 .*, the manifest says"):
        TokenShards(stored, root).read(0)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-fetched left behind


def test_a_shard_write_that_fails_leaves_no_file(tmp_path):
    def blocks():
        yield IDS[:100]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_shard(tmp_path, "etl/shards/x.npy", blocks(), len(IDS), np.uint16)
    assert list((tmp_path / "etl" / "shards").iterdir()) == []
    with pytest.raises(TokenShardsError, match="100 tokens written, 200 announced"):
        write_shard(tmp_path, "etl/shards/x.npy", [IDS[:100]], 200, np.uint16)
    missing = TokenShards(store_array(tmp_path, "etl/shards/y.npy", IDS, VOCAB, "train"), tmp_path / "elsewhere")
    with pytest.raises(TokenShardsError, match=r"shard etl/shards/y\.npy of the train split is missing"):
        missing.read(0)


@pytest.mark.parametrize("budget", [None, 0], ids=["on-the-device", "from-the-memory-maps"])
def test_one_shard_draws_exactly_the_windows_of_one_token_stream(tmp_path, budget):
    # What training drew before shards existed: windows of one int64 tensor, positions from the same generator.
    stream = torch.from_numpy(IDS.astype(np.int64)).unfold(0, 33, 1)
    reference = torch.Generator().manual_seed(7)
    split = TokenShards(store_array(tmp_path, "etl/shards/t.npy", IDS, VOCAB, "train"), tmp_path)
    sampler = BatchSampler(split, 32, 16, 7, budget=budget)
    assert sampler.resident is (budget is None)
    for _ in range(5):
        rows = stream[torch.randint(stream.shape[0], (16,), generator=reference)]
        inputs, targets = sampler()
        assert inputs.dtype == torch.int64
        assert torch.equal(inputs, rows[:, :-1]) and torch.equal(targets, rows[:, 1:])


@pytest.mark.parametrize("budget", [None, 0], ids=["on-the-device", "from-the-memory-maps"])
def test_windows_come_from_every_shard_and_never_cross_between_them(tmp_path, budget):
    split = two_shards(tmp_path)
    sampler = BatchSampler(split, 32, 64, 3, budget=budget)
    assert sampler.windows == (3500 - 32) + (2500 - 32)
    windows = {
        name: {tuple(w) for w in np.lib.stride_tricks.sliding_window_view(ids, 33)}
        for name, ids in (("a", IDS[:3500]), ("b", IDS[3500:]))
    }
    seen = set()
    for _ in range(10):
        inputs, targets = sampler()
        for row in torch.cat([inputs, targets[:, -1:]], dim=1).tolist():
            [name] = [name for name, known in windows.items() if tuple(row) in known]
            seen.add(name)
    assert seen == {"a", "b"}
    # Two ranks together draw the batch of one process.
    halves = [BatchSampler(split, 32, 64, 3, rank, 2, budget=budget)()[0] for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), BatchSampler(split, 32, 64, 3, budget=budget)()[0])


def test_evaluation_streams_the_shards_with_the_windows_of_one_tensor(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = DecoderTransformer(TransformerConfig(VOCAB, 32, n_layer=1, n_head=2, n_embd=32, dropout=0.0))
    split = TokenShards(store_array(tmp_path, "etl/shards/t.npy", IDS, VOCAB, "test"), tmp_path)
    whole = window_metrics(model, torch.from_numpy(IDS.astype(np.int64)))
    monkeypatch.setattr(token_windows, "_PIECE_TOKENS", 1000)  # several pieces per shard, whole batches each
    assert window_metrics(model, split) == whole
    assert window_metrics(model, split, max_tokens=700) == window_metrics(
        model, torch.from_numpy(IDS.astype(np.int64)), max_tokens=700
    )
    # Across shards: each shard's own windows, none spanning the two.
    both = window_metrics(model, two_shards(tmp_path))
    assert both["tokens"] == (3499 // 32 + 2499 // 32) * 32
    with pytest.raises(ValueError, match="20 tokens cannot fill one window of 33"):
        window_metrics(model, IDS[:20])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: run on a machine with a GPU")
def test_on_a_gpu_resident_batches_never_sync_the_host_and_both_paths_agree(tmp_path):
    split = two_shards(tmp_path)
    device = torch.device("cuda")
    resident = BatchSampler(split, 32, 64, 11, device=device)
    assert resident.resident and resident.generator.device.type == "cuda"
    resident()  # the first call may allocate
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the step raises
    try:
        for _ in range(20):
            inputs, _ = resident()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert inputs.device.type == "cuda" and inputs.dtype == torch.int64
    # From the memory maps through pinned memory: the same windows for the same positions.
    mapped = BatchSampler(split, 32, 64, torch.Generator(device="cuda").manual_seed(5), device=device, budget=0)
    again = BatchSampler(split, 32, 64, torch.Generator(device="cuda").manual_seed(5), device=device)
    assert not mapped.resident and torch.equal(mapped()[0], again()[0])
