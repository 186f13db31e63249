"""Real training on small data: the loss falls, CPU runs repeat exactly, configs are validated."""

import numpy as np
import pytest

from model_code_location.presets import PRESETS, TrainingConfig
from model_code_location.training import learning_rate_at, train

TEXT = "the cat sat on the mat. the dog sat on the log. " * 200


def tiny_data():
    symbols = sorted(set(TEXT))
    ids = np.array([symbols.index(c) + 1 for c in TEXT], dtype=np.uint16)
    return ids[:8000], ids[8000:], len(symbols) + 1


def hp(**overrides):
    return TrainingConfig(preset="tiny", **overrides).resolved() | {"device": "cpu"}


def test_loss_falls_and_best_checkpoint_is_kept():
    train_ids, validation_ids, vocab = tiny_data()
    result = train(train_ids, validation_ids, vocab, hp(max_iters=120, eval_interval=40), log=lambda _: None)
    losses = result.history["validation_loss"]
    assert losses[-1] < losses[0] - 1.0  # a repetitive text is learned fast
    assert result.summary["validation_loss"] <= min(losses) + 0.05
    assert result.summary["tokens_per_second"] > 0 and result.summary["device"] == "cpu"


def test_cpu_training_is_deterministic_for_a_seed():
    train_ids, validation_ids, vocab = tiny_data()
    runs = [train(train_ids, validation_ids, vocab, hp(max_iters=20, seed=s), log=lambda _: None) for s in (1, 1, 2)]
    a, b, c = (r.model.state_dict()["wte.weight"] for r in runs)
    assert np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


def test_presets_and_overrides():
    assert TrainingConfig().resolved()["preset"] == "quick"
    resolved = TrainingConfig(preset="gpu", max_iters=10).resolved()
    assert resolved["max_iters"] == 10 and resolved["n_embd"] == PRESETS["gpu"]["n_embd"]
    with pytest.raises(ValueError, match="multiple of n_head"):
        TrainingConfig(n_embd=130).resolved()
    with pytest.raises(ValueError):
        TrainingConfig(preset="huge")
    with pytest.raises(ValueError):
        TrainingConfig(learning_rate=-1.0)


def test_learning_rate_warms_up_then_decays_to_the_minimum():
    params = {"learning_rate": 1e-3, "min_learning_rate": 1e-4, "warmup_iters": 10, "max_iters": 110}
    assert learning_rate_at(0, params) == pytest.approx(1e-4)
    assert learning_rate_at(9, params) == pytest.approx(1e-3)
    assert learning_rate_at(60, params) == pytest.approx(5.5e-4)
    assert learning_rate_at(110, params) == pytest.approx(1e-4)


def test_a_split_shorter_than_a_block_is_a_clear_error():
    train_ids, _, vocab = tiny_data()
    with pytest.raises(ValueError, match="fewer than block_size"):
        train(train_ids[:10], train_ids[:100], vocab, hp(), log=lambda _: None)


def test_a_training_killed_mid_way_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path):
    import torch
    from upath import UPath

    from model_code_location.checkpoints import CheckpointStore, checkpoint_key

    train_ids, validation_ids, vocab = tiny_data()
    params = hp(max_iters=120, eval_interval=40, checkpoint_interval=40)
    reference = train(train_ids, validation_ids, vocab, params, log=lambda _: None)
    key = checkpoint_key("1", params, train_ids, validation_ids)
    store = CheckpointStore(UPath(tmp_path), key)

    class Killed(Exception):
        pass

    def killed_after_step_100(message: str) -> None:
        if message.startswith("step 100/"):
            raise Killed  # like a run worker killed between two checkpoints

    with pytest.raises(Killed):
        train(train_ids, validation_ids, vocab, params, log=killed_after_step_100, checkpoints=store)
    assert store.path.exists()  # the checkpoint of step 80
    messages = []
    resumed = train(train_ids, validation_ids, vocab, params, log=messages.append, checkpoints=store)
    assert messages[0].startswith("resumed from the checkpoint at step 80")
    expected, actual = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert resumed.history == reference.history
    assert not store.path.exists()  # finished: nothing left to resume


def test_a_checkpoint_of_other_data_code_or_config_is_never_resumed():
    from model_code_location.checkpoints import checkpoint_key

    train_ids, validation_ids, _ = tiny_data()
    params = hp()
    key = checkpoint_key("1", params, train_ids, validation_ids)
    assert checkpoint_key("2", params, train_ids, validation_ids) != key  # code
    assert checkpoint_key("1", params | {"learning_rate": 1e-3}, train_ids, validation_ids) != key  # config
    assert checkpoint_key("1", params, train_ids[1:], validation_ids) != key  # data
    # How often it logs or checkpoints does not change what it learns.
    assert checkpoint_key("1", params | {"checkpoint_interval": 7, "log_interval": 3}, train_ids, validation_ids) == key


def test_training_reads_shards_on_the_device_or_from_their_memory_maps_alike(tmp_path, monkeypatch):
    # Two files' shards, as the ETL stores them and the IO manager hands them over: training samples across both
    # without joining them; with the tokens on the device or gathered from the memory maps (a split larger than
    # the device's budget), it learns exactly the same model.
    import torch

    from shared_code_location.contract.token_shards import Shard, TokenShards, manifest, store_array
    from shared_code_location.model import token_windows

    train_ids, validation_ids, vocab = tiny_data()
    files = [store_array(tmp_path, f"etl/shards/{i}.npy", part, vocab, "train") for i, part in enumerate(
        (train_ids[:5000], train_ids[5000:]))]  # fmt: skip
    shards = [Shard.from_json(shard) for stored in files for shard in stored["shards"]]
    train_split = TokenShards(manifest("train", shards, None, vocab), tmp_path)
    validation = TokenShards(store_array(tmp_path, "etl/shards/v.npy", validation_ids, vocab, "validation"), tmp_path)
    params = hp(max_iters=60, eval_interval=30)
    resident = train(train_split, validation, vocab, params, log=lambda _: None)
    monkeypatch.setattr(token_windows, "CPU_RESIDENT_BYTES", 0)
    mapped = train(train_split, validation, vocab, params, log=lambda _: None)
    assert resident.history["validation_loss"][-1] < resident.history["validation_loss"][0] - 0.5
    expected, actual = resident.model.state_dict(), mapped.model.state_dict()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
