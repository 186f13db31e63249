"""CUDA-only: what training does on a GPU. Skipped on a machine without one (CI); on one, with PyTorch, NumPy,
safetensors and pytest alone (no Dagster, no project venv needed):

    PYTHONPATH=shared_code_location:2_model_code_location python3 -m pytest -q -p no:cacheprovider \\
        2_model_code_location/tests/cuda

A small model of the gpu preset's kind (bf16 autocast, fused AdamW, batch on the device), a few dozen steps each.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from model_code_location import compilation
from model_code_location.checkpoints import CheckpointStore, checkpoint_key
from model_code_location.hyperparameters import hyperparameters
from model_code_location.training import train
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig, to_tensor_bundle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only: needs a CUDA GPU")

CORPUS = Path(__file__).resolve().parents[3] / "example_input_files_resource" / "tinyshakespeare.txt"
SMALL = dict(n_layer=2, n_head=4, n_embd=128, block_size=64, batch_size=64, max_iters=60, eval_interval=20)
SMALL |= dict(log_interval=20, checkpoint_interval=0, patience=0, device="cuda", eval_tokens=0)


def tokens() -> tuple[np.ndarray, np.ndarray, int]:
    text = CORPUS.read_text(encoding="utf-8")[:300_000]
    symbols = sorted(set(text))
    ids = np.array([symbols.index(c) + 1 for c in text], dtype=np.uint16)
    return ids[:270_000], ids[270_000:], len(symbols) + 1


@pytest.fixture(autouse=True)
def compile_cache(tmp_path_factory, monkeypatch):
    """One inductor cache for the module's compiles, none of the user's touched."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))


@pytest.mark.parametrize("compile_", ["off", "on"])
def test_no_synchronisation_inside_the_step_loop(compile_):
    # The caller's sync debug mode holds inside the training steps (the first compiled step, which compiles, apart):
    # any synchronising call there (`.item()`, a blocking copy) raises. Logging, evaluation and checkpoints may wait.
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = train(*tokens(), hyperparameters("gpu", **SMALL, compile=compile_), log=lambda _: None)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert result.summary["compiled"] == (compile_ == "on")
    assert result.history["step"] == [20, 40, 60]


def test_compiled_training_learns_what_eager_learns_checkpoints_resume_and_names_stay_plain(tmp_path):
    data = tokens()
    eager = train(*data, hyperparameters("gpu", **SMALL, compile="off"), log=lambda _: None)
    hp = hyperparameters("gpu", **SMALL | {"checkpoint_interval": 20}, compile="on")
    store = CheckpointStore(tmp_path, checkpoint_key("cuda", hp, *data[:2]))

    class Killed(Exception):
        pass

    def killed_at_step_40(line: str) -> None:
        if line.startswith("step 40/"):
            raise Killed

    with pytest.raises(Killed):
        train(*data, hp, log=killed_at_step_40, checkpoints=store)
    lines: list[str] = []
    compiled = train(*data, hp, log=lines.append, checkpoints=store)
    assert lines[0].startswith("resumed from the checkpoint at step 20")
    assert compiled.summary["compiled"] and compiled.summary["compile_seconds"] > 0
    # bf16 either way; compiled kernels round differently, the model learns the same.
    assert np.allclose(compiled.history["validation_loss"], eager.history["validation_loss"], atol=0.05)
    plain = set(DecoderTransformer(compiled.model.config).state_dict()) - {"lm_head.weight"}
    assert set(to_tensor_bundle(compiled.model).tensors) == plain


def test_auto_compiles_the_gpu_preset_and_not_a_short_run(tmp_path):
    def decide(**overrides) -> compilation.Decision:
        hp = hyperparameters("gpu", device="cuda", **overrides)
        config = TransformerConfig(65, hp["block_size"], hp["n_layer"], hp["n_head"], hp["n_embd"])
        return compilation.decide(hp, DecoderTransformer(config), torch.device("cuda"), 1, tmp_path)

    assert decide().compile, decide().why
    assert not decide(max_iters=100).compile


def _rank(rank: int, world: int, port: int, hp: dict, out: str) -> None:
    """One of two ranks on the one GPU (gloo: NCCL takes one rank per GPU), the block compiled in each."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = train(*tokens(), hp, log=lambda _: None, device=torch.device("cuda", 0))
        if rank == 0:
            np.save(out, np.array(result.history["validation_loss"]))
            assert result.summary["compiled"] and not any("_orig_mod" in n for n in result.model.state_dict())
    finally:
        torch.distributed.destroy_process_group()


def test_two_data_parallel_ranks_each_compile_and_learn_what_one_process_learns(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hp = hyperparameters("gpu", **SMALL, compile="on")
    out = str(tmp_path / "validation.npy")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.multiprocessing.spawn(_rank, args=(2, port, hp, out), nprocs=2)
    alone = train(*tokens(), hp, log=lambda _: None)
    assert np.allclose(np.load(out), alone.history["validation_loss"], atol=0.05)
