"""Real training on small data: the loss falls, CPU runs repeat exactly, configs are validated, the step loop never
waits for the device, early stopping stops, keeps the best and survives a resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from model_code_location.hyperparameters import hyperparameters
from model_code_location.presets import PRESETS, TrainingConfig
from model_code_location.training import learning_rate_at, train

ROOT = Path(__file__).resolve().parents[2]
#: The import roots of training: the shared package and this location's.
PACKAGES = ("shared_code_location", "2_model_code_location")
TORCH = str(Path(torch.__file__).parent)
#: The frames between a tensor read and the dispatch mode that sees it.
DISPATCH = ("_python_dispatch.py", "_ops.py", "eval_frame.py", "_compile.py")

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


def test_quick_and_tiny_neither_compile_nor_stop_early_and_gpu_does_both_where_it_pays():
    for name in ("quick", "tiny"):  # their results stay what docs/figures.md says
        assert (PRESETS[name]["compile"], PRESETS[name]["patience"]) == ("off", 0)
    assert (PRESETS["gpu"]["compile"], PRESETS["gpu"]["patience"] > 0) == ("auto", True)
    with pytest.raises(ValueError, match="compile 'sometimes' is not one of auto, on, off"):
        hyperparameters("tiny", compile="sometimes")


class _HostReads(TorchDispatchMode):
    """Counts the project's own reads of a tensor's value, which make the host wait for the device: `.item()`,
    `float()`, `bool()` (`aten._local_scalar_dense`) and, patched in, `.cpu()`, `.numpy()` and `.tolist()` (which
    on a CPU tensor dispatch nothing). A read made inside PyTorch is not counted: the CPU's AdamW reads its step
    counts, which on CUDA (fused) stay on the device, as `tests/cuda` checks with CUDA's sync debug mode."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def record(self, frame) -> None:
        while frame is not None and frame.f_code.co_filename.endswith(DISPATCH):
            frame = frame.f_back  # the dispatch machinery
        if frame is not None and not frame.f_code.co_filename.startswith(TORCH):
            self.reads.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.record(sys._getframe(1))
        return func(*args, **(kwargs or {}))


def _host_reads_of_a_run(max_iters: int, monkeypatch) -> list[str]:
    train_ids, validation_ids, vocab = tiny_data()
    params = hp(max_iters=max_iters, log_interval=max_iters, eval_interval=10**6, eval_tokens=2048)
    counter = _HostReads()

    def counted(method):
        def call(tensor, *args, **kwargs):
            counter.record(sys._getframe(1))
            return method(tensor, *args, **kwargs)

        return call

    for name in ("cpu", "numpy", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    with counter:
        train(train_ids, validation_ids, vocab, params, log=lambda _: None)
    monkeypatch.undo()
    return counter.reads


def test_the_step_loop_never_waits_for_the_device(monkeypatch):
    # The same evaluations (first and last step) and one log line, 4 steps or 12: the host reads a tensor's value
    # exactly as often, so no step does (on a GPU, `tests/cuda` proves it with CUDA's sync debug mode).
    few, more = _host_reads_of_a_run(4, monkeypatch), _host_reads_of_a_run(12, monkeypatch)
    assert len(few) == len(more), f"8 more steps, {len(more) - len(few)} more reads: {sorted(set(more))}"
    assert any(read.startswith("training.py") for read in few)  # the counting works: the log line reads a value


def _early_stopping(**overrides):
    return hp(**{"max_iters": 100, "eval_interval": 10, "log_interval": 10, "eval_tokens": 2048} | overrides)


def test_early_stopping_stops_after_patience_evaluations_keeps_the_best_and_says_where_and_why():
    train_ids, validation_ids, vocab = tiny_data()
    lines = []
    # Only a drop of 10 nats counts: the first evaluation is the last improvement, so the third after it stops.
    result = train(train_ids, validation_ids, vocab, _early_stopping(patience=3, min_delta=10.0), log=lines.append)
    stopped = result.history["stopped"]
    assert stopped["step"] == 30 and result.summary["stopped_step"] == 30
    assert stopped["reason"].startswith("early stopping: 3 evaluations without an improvement of at least 10")
    assert result.summary["stop_reason"] == stopped["reason"]
    assert any(line.startswith("step 30: stopped, early stopping") for line in lines), lines
    assert result.history["eval_step"] == [0, 10, 20, 30] and result.history["step"][-1] == 30  # no step after
    # The best weights are kept (any improvement counts for them), and they are what was returned.
    losses = result.history["validation_loss"]
    assert result.summary["best_step"] == result.history["eval_step"][losses.index(min(losses))]
    assert result.summary["validation_loss"] == pytest.approx(min(losses), abs=0.05)
    # Without patience it runs to max_iters, and says so.
    full = train(train_ids, validation_ids, vocab, _early_stopping(max_iters=40), log=lambda _: None)
    assert full.history["stopped"] == {"step": 40, "reason": "max_iters (40) reached"}


def test_resuming_keeps_early_stoppings_count(tmp_path):
    from upath import UPath

    from model_code_location.checkpoints import CheckpointStore, checkpoint_key

    train_ids, validation_ids, vocab = tiny_data()
    params = _early_stopping(patience=3, min_delta=10.0, checkpoint_interval=20)
    reference = train(train_ids, validation_ids, vocab, params, log=lambda _: None)
    store = CheckpointStore(UPath(tmp_path), checkpoint_key("1", params, train_ids, validation_ids))

    class Killed(Exception):
        pass

    def killed_after_step_25(message: str) -> None:
        if message.startswith("step 25/"):
            raise Killed

    with pytest.raises(Killed):
        train(train_ids, validation_ids, vocab, params | {"log_interval": 5}, killed_after_step_25, store)
    # The checkpoint of step 20 holds two evaluations without improvement: the resumed run stops at the next one,
    # as the uninterrupted run did (a count started again would run on to step 50).
    resumed = train(train_ids, validation_ids, vocab, params | {"log_interval": 5}, lambda _: None, store)
    assert reference.history["stopped"]["step"] == resumed.history["stopped"]["step"] == 30
    assert resumed.history["validation_loss"] == reference.history["validation_loss"]


def test_training_runs_without_dagster_from_a_plain_dict_and_its_benchmark_smoke_runs(tmp_path):
    # What a GPU machine without the project's environment has: PyTorch and NumPy. Dagster, pydantic and upath are
    # made unimportable; the benchmark (scripts/benchmark_training.py) trains through train() there.
    blocked = "import sys; [sys.modules.__setitem__(m, None) for m in ('dagster', 'pydantic', 'upath')];"
    script = ROOT / "scripts" / "benchmark_training.py"
    code = blocked + f"sys.argv = ['b', '--device', 'cpu', '--smoke', '--out', {str(tmp_path)!r}];"
    code += f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in PACKAGES)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "benchmark_training.json").read_text())
    assert not figures["errors"], figures["errors"]
    assert figures["throughput"]["train_vs_bare_eager"] > 0 and figures["peak"]["peak_used"] > 0
    run = figures["preset_runs"]["eager"]
    assert 0 < run["best_validation_loss"] < 4 and run["stopped_step"] == 60
    assert "| train eager tokens/s |" in done.stdout  # the table
