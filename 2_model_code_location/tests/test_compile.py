"""`torch.compile` in training, for real, on the CPU: one compiled training of a very small model (one layer), killed
mid-way and resumed, serves every assertion, since the first compile costs ~30 s here (inductor and gcc). Its
inductor cache lives in a temporary folder. A compile that fails names the setting that turns compiling off.

What only a GPU can show (compiled speed, `auto` deciding on, no sync in the compiled loop, DDP over NCCL) is in
`tests/cuda/` and `scripts/benchmark_training.py --device cuda`.
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
from shared_code_location.contract.storage_formats import StorageFormat, decode
from shared_code_location.model.transformer import (
    DecoderTransformer,
    TransformerConfig,
    from_tensor_bundle,
    to_tensor_bundle,
)

TEXT = "the cat sat on the mat. the dog sat on the log. " * 200
#: The smallest model that still learns the text: one block, compiled once.
SMALL = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, max_iters=40, learning_rate=4e-3)
SMALL |= dict(eval_interval=10, log_interval=10, eval_tokens=2048, checkpoint_interval=20, device="cpu")


def tiny_data():
    symbols = sorted(set(TEXT))
    ids = np.array([symbols.index(c) + 1 for c in TEXT], dtype=np.uint16)
    return ids[:8000], ids[8000:], len(symbols) + 1


def graphs_compiled() -> int:
    """Graphs dynamo compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The small model trained compiled: killed after step 30 (a checkpoint at step 20), resumed; uninterrupted
    compiled and eager references; what the checkpoint held; the seconds each part took."""
    from upath import UPath

    folder = tmp_path_factory.mktemp("compiled")
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")  # a cold cache, and no user's cache touched
    torch._dynamo.reset()
    data = tiny_data()
    hp = hyperparameters("tiny", **SMALL, compile="on")
    store = CheckpointStore(UPath(folder), checkpoint_key("1", hp, *data[:2]))
    seen: dict = {"lines": [], "seconds": {}}

    class Killed(Exception):
        pass

    def killed_after_step_30(line: str) -> None:
        seen["lines"].append(line)
        if line.startswith("step 30/"):
            seen["checkpoint"] = decode(StorageFormat.SAFETENSORS, store.path.read_bytes())
            raise Killed

    try:
        began = graphs_compiled()
        started = clock = _now()
        with pytest.raises(Killed):
            train(*data, hp, log=killed_after_step_30, checkpoints=store)
        seen["seconds"]["first compiled run (cold cache)"], clock = _now() - clock, _now()
        seen["graphs_of_first_run"] = graphs_compiled() - began
        seen["resumed_lines"] = []
        resumed = train(*data, hp, log=seen["resumed_lines"].append, checkpoints=store)
        seen["seconds"]["resumed"], clock = _now() - clock, _now()
        uninterrupted = train(*data, hp, log=lambda _: None)
        eager = train(*data, hp | {"compile": "off"}, log=lambda _: None)
        seen["seconds"]["references"], seen["seconds"]["all"] = _now() - clock, _now() - started
        print(f"compiled training on the CPU: {seen['seconds']}")
        yield resumed, uninterrupted, eager, seen
    finally:
        if previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _now() -> float:
    import time

    return time.perf_counter()


def test_compiled_training_learns_what_eager_learns_compiling_one_block_once(compiled):
    _, uninterrupted, eager, seen = compiled
    assert uninterrupted.summary["compiled"] and uninterrupted.summary["compile_decision"] == "compile: on"
    assert not eager.summary["compiled"]
    assert np.allclose(uninterrupted.history["validation_loss"], eager.history["validation_loss"], atol=0.02)
    assert uninterrupted.history["validation_loss"][-1] < uninterrupted.history["validation_loss"][0] - 1.0
    # One graph (the block's forward, backward with it) for the whole run: evaluations ran the block eagerly.
    assert seen["graphs_of_first_run"] == 1, seen["graphs_of_first_run"]
    first = next(line for line in seen["lines"] if ": compiled, the first step took" in line)
    assert first.startswith("step 1: compiled") and "(cold cache " in first
    assert uninterrupted.summary["compile_seconds"] > 0


def test_a_compiled_run_checkpoints_plain_names_and_resumes(compiled):
    resumed, uninterrupted, _, seen = compiled
    names = set(DecoderTransformer(TransformerConfig(vocab_size=resumed.model.config.vocab_size, **{
        k: SMALL[k] for k in ("block_size", "n_layer", "n_head", "n_embd")})).state_dict())  # fmt: skip
    saved = {name.removeprefix("model.") for name in seen["checkpoint"].tensors if name.startswith("model.")}
    assert saved == names  # no `_orig_mod.`: a checkpoint resumes into a compiled or an eager model alike
    assert seen["resumed_lines"][0].startswith("resumed from the checkpoint at step 20")
    assert resumed.history["eval_step"] == uninterrupted.history["eval_step"]
    assert np.allclose(resumed.history["validation_loss"], uninterrupted.history["validation_loss"], atol=1e-4)


def test_the_weights_of_a_compiled_run_are_plain_and_what_the_export_reads(compiled):
    resumed, *_ = compiled
    bundle = to_tensor_bundle(resumed.model)
    assert not any("_orig_mod" in name for name in bundle.tensors)
    restored = from_tensor_bundle(bundle)  # what evaluation and the ONNX export rebuild, strictly by name
    ids = torch.randint(1, 10, (2, 16))
    before = graphs_compiled()
    with torch.no_grad():
        assert torch.allclose(restored(ids), resumed.model.eval()(ids), atol=1e-5)
    assert graphs_compiled() == before  # the returned model is a plain one: nothing compiles downstream


def test_a_compile_that_fails_names_the_setting_that_turns_it_off(compiled, tmp_path):
    # A machine without a working C++ compiler (inductor needs one on the CPU): the run fails, it does not quietly
    # train eager. Another shape than the module's run, so nothing cached can stand in for the compile.
    import torch._inductor.config

    data = tiny_data()
    hp = hyperparameters("tiny", **SMALL | {"n_embd": 48, "max_iters": 2, "checkpoint_interval": 0}, compile="on")
    no_compiler = torch._inductor.config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-c++"))})
    with no_compiler, pytest.raises(compilation.CompileError) as failure:
        train(*data, hp, log=lambda _: None)
    message = str(failure.value)
    assert message.startswith("torch.compile failed: ") and "no-such-c++" in message
    assert 'set compile to "off"' in message and "--set compile=off" in message


def test_auto_compiles_only_on_cuda_and_only_runs_long_enough_to_earn_the_warm_start(tmp_path):
    def decide(preset: str, device: str, **overrides) -> compilation.Decision:
        hp = hyperparameters(preset, **overrides)
        config = TransformerConfig(65, hp["block_size"], hp["n_layer"], hp["n_head"], hp["n_embd"])
        return compilation.decide(hp, DecoderTransformer(config), torch.device(device), 1, None)

    assert not decide("gpu", "cpu").compile and "off on cpu" in decide("gpu", "cpu").why
    assert not decide("gpu", "mps").compile
    shipped = decide("gpu", "cuda")
    assert shipped.compile, shipped.why  # ~28 s of eager steps: compiling saves ~6 s, more than a warm start
    assert not decide("gpu", "cuda", max_iters=100).compile  # 3 s of steps: not worth even a warm start
    assert not decide("tiny", "cuda", compile="auto").compile
    assert decide("tiny", "cpu", compile="on").compile and not decide("gpu", "cuda", compile="off").compile
    # What a shape's starts measured is what `auto` expects next time.
    assert compilation.record_warmup(tmp_path, "shape", 21.0) == "cold"
    assert compilation.record_warmup(tmp_path, "shape", 3.5) == "warm"
    assert compilation.recorded_warmups(tmp_path, "shape") == {"cold": 21.0, "warm": 3.5}
    assert compilation.recorded_warmups(Path(tmp_path / "elsewhere"), "shape") == {}
