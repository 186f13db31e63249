"""The training loop: AdamW, linear warmup then cosine decay, gradient clipping, periodic validation, best
checkpoint kept, early stopping, the transformer's block compiled where it pays (`compilation.py`). One process, or
one rank of a data-parallel group (DDP) that Ray Train's `TorchTrainer` starts.

The host never waits for the device inside the step loop: losses add up on the device and are read once per
`log_interval`, and the time of the steps is taken over the interval, so on a GPU the CPU queues steps ahead of
the running one. The host reads (and waits) only to log, evaluate and checkpoint; a caller that sets CUDA's sync
debug mode (`torch.cuda.set_sync_debug_mode("error")`) gets it inside the training steps alone, so any
synchronisation there fails (the CUDA test of it: `tests/cuda/`).

Needs PyTorch and NumPy only (no Dagster): `train()` takes a plain dict of hyperparameters
(`hyperparameters.hyperparameters()`). Imports torch: import this module only inside the asset body."""

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from model_code_location import compilation
from model_code_location.checkpoints import CheckpointStore, TrainingState
from shared_code_location import settings
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.model.token_windows import BatchSampler, Tokens, as_token_shards, to_device
from shared_code_location.model.transformer import (
    DecoderTransformer,
    TransformerConfig,
    autocast,
    pick_device,
    window_metrics,
)


@dataclass
class TrainingResult:
    """What training produced: the best model (by validation loss) and how it got there."""

    model: DecoderTransformer
    history: dict[str, Any]  # losses by step (lists), and where training stopped and why (`stopped`)
    summary: dict[str, Any] = field(default_factory=dict)


def learning_rate_at(step: int, hp: dict[str, Any]) -> float:
    """Linear warmup to `learning_rate`, then cosine decay to `min_learning_rate` at `max_iters`."""
    if hp["warmup_iters"] and step < hp["warmup_iters"]:
        return hp["learning_rate"] * (step + 1) / hp["warmup_iters"]
    span = max(1, hp["max_iters"] - hp["warmup_iters"])
    progress = min(1.0, (step - hp["warmup_iters"]) / span)
    return hp["min_learning_rate"] + 0.5 * (1 + math.cos(math.pi * progress)) * (
        hp["learning_rate"] - hp["min_learning_rate"]
    )


def make_optimizer(model: DecoderTransformer, hp: dict[str, Any], device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on LayerNorm weights or biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp["learning_rate"], betas=(0.9, 0.99), fused=device.type == "cuda")


def batch_sampler(
    tokens: TokenShards | np.ndarray | torch.Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator | int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> BatchSampler:
    """A function returning random (inputs, targets) windows of a split's shards, never crossing from one shard to
    the next: `token_windows.BatchSampler`. Tokens that fit the device's budget live there in a compact integer type
    and windows are gathered there (no host work, no sync per step); larger splits are gathered on the host from
    the memory-mapped shards and copied asynchronously. With one shard, a window is drawn exactly as from one token
    stream. `generator`: a seed (the sampler makes its generator where positions are drawn; its `.generator` is what
    a checkpoint saves) or a generator.

    Every rank draws the same `batch_size` window positions from the same generator state and keeps its own
    contiguous `batch_size // world` of them: the ranks together see exactly the batch one process would, so a run
    learns the same thing on any number of workers (up to the order of floating-point sums).
    """
    return BatchSampler(tokens, block_size, batch_size, generator, rank, world, device)


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process in the initialized `torch.distributed` group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_ranks_rng_states(world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's CPU random state (dropout draws from it), gathered on every rank: the checkpoint keeps them all."""
    state = torch.get_rng_state()
    if world == 1:
        return [state]
    # NCCL moves CUDA tensors only; gloo, CPU ones.
    on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.empty_like(state, device=on) for _ in range(world)]
    torch.distributed.all_gather(gathered, state.to(on))
    return [tensor.cpu() for tensor in gathered]


def _mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The mean of `value` over the ranks (each rank's loss is over its shard, of equal size)."""
    if world == 1:
        return value
    on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.float64, device=on)
    torch.distributed.all_reduce(total)
    return total.item() / world


def _synchronize(device: torch.device) -> None:
    """Wait until the device has run what was queued (the CPU's work is done when the call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _agree(stop: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision to stop, on every rank (rank 0 alone evaluates)."""
    if world == 1:
        return stop
    on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([int(stop)], device=on)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def evaluate_loss(model: DecoderTransformer, tokens: Tokens, max_tokens: int = 0) -> float:
    """Mean next-token loss (nats) over consecutive windows of `tokens` (shards streamed, or resident segments):
    `window_metrics`, as the evaluation uses."""
    return window_metrics(model, tokens, max_tokens)["loss"]


def train(
    train_ids: TokenShards | np.ndarray,
    validation_ids: TokenShards | np.ndarray,
    vocab_size: int,
    hp: dict[str, Any],
    log: Callable[[str], None] = print,
    checkpoints: CheckpointStore | None = None,
    device: torch.device | None = None,
    clear_checkpoint: bool = True,
) -> TrainingResult | None:
    """Train a `DecoderTransformer` with hyperparameters `hp` (see `hyperparameters.PRESETS`) and return its best
    state.

    With `checkpoints`, the whole state is saved every `hp["checkpoint_interval"]` steps and training resumes from
    a saved state of the same key, continuing exactly as if it had never stopped (on CPU, bit for bit; early
    stopping's count too). The checkpoint is removed at the end unless `clear_checkpoint` is off (the caller then
    removes it once the result is safe).

    `hp["patience"]` > 0 stops training once that many evaluations in a row improved on the best validation loss
    by less than `hp["min_delta"]`; the best weights are kept either way, and `history["stopped"]` (and the
    summary) say at which step training stopped and why. `hp["compile"]` compiles the block (`compilation.py`); a
    compile that fails raises `CompileError`, naming the setting that turns it off.

    In a `torch.distributed` process group (Ray Train's `TorchTrainer` sets one up), this is one rank of data-parallel
    training: each rank computes the gradients of its shard of every batch (`batch_sampler`), DDP averages them,
    and rank 0 alone validates, logs, saves checkpoints and returns the result; the other ranks return None. A
    seeded run is reproducible for a given number of workers. `device`: default `hp["device"]` (`pick_device`).
    """
    device = device or pick_device(hp["device"])
    checked = torch.cuda.get_sync_debug_mode() if device.type == "cuda" else 0  # the caller's, for the steps
    try:
        return _train(train_ids, validation_ids, vocab_size, hp, log, checkpoints, device, clear_checkpoint, checked)
    finally:
        if checked:
            torch.cuda.set_sync_debug_mode(checked)


def _train(
    train_ids: TokenShards | np.ndarray,
    validation_ids: TokenShards | np.ndarray,
    vocab_size: int,
    hp: dict[str, Any],
    log: Callable[[str], None],
    checkpoints: CheckpointStore | None,
    device: torch.device,
    clear_checkpoint: bool,
    checked: int,
) -> TrainingResult | None:
    def check_syncs(on: bool) -> None:
        """The caller's sync debug mode in the training steps, none where the host may wait (`pause`)."""
        if checked:
            torch.cuda.set_sync_debug_mode(checked if on else 0)

    check_syncs(False)  # set-up copies the data and the model to the device
    rank, world = process_group()
    torch.manual_seed(hp["seed"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = TransformerConfig(
        vocab_size=vocab_size,
        block_size=hp["block_size"],
        n_layer=hp["n_layer"],
        n_head=hp["n_head"],
        n_embd=hp["n_embd"],
        dropout=hp["dropout"],
    )
    model = DecoderTransformer(config).to(device)  # the same initial weights on every rank: same seed
    compiling = hp.get("compile", "off") == "on" or (hp.get("compile") == "auto" and device.type == "cuda")
    cache = compilation.use_cache(settings.COMPILE_CACHE.path()) if compiling else None
    decision = compilation.decide(hp, model, device, world, cache)
    if decision.compile:
        compilation.compile_blocks(model)  # in place: the weights keep their names
    # Evaluation runs the compiled block eagerly: other shapes, no gradients, no second graph to compile.
    eager = compilation.eager if decision.compile else contextlib.nullcontext
    # Gradients are averaged across ranks as backward runs; one process trains `model` itself.
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(hp["seed"] + rank)  # dropout: every rank its own masks (rank 0 as one process would)
    optimizer = make_optimizer(model, hp, device)
    train_ids, validation_ids = as_token_shards(train_ids, vocab_size), as_token_shards(validation_ids, vocab_size)
    next_batch = batch_sampler(train_ids, hp["block_size"], hp["batch_size"], hp["seed"], rank, world, device)
    generator = next_batch.generator  # where the windows are drawn; its state goes in the checkpoint
    # On the device when it fits (compact ids, one tensor per shard), else streamed from the shards at each evaluation.
    validation_tokens = to_device(validation_ids, device) or validation_ids
    tokens_per_step = hp["batch_size"] * hp["block_size"]  # of the whole batch, all ranks together
    if rank:
        log = _silent  # rank 0 speaks for the group

    history: dict[str, Any] = {"step": [], "train_loss": [], "eval_step": [], "validation_loss": []}
    best_loss, best_state, best_step = math.inf, None, 0
    train_seconds, running_steps, evaluations_without_improvement = 0.0, 0, 0
    # The sum of the losses since the last log line, on the device: float64 as the host's sum was (MPS has none).
    running_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    start_step = 0
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        generator.set_state(saved.generator_state)
        if len(saved.torch_rng_states) != world:
            raise ValueError(f"{checkpoints.path} holds {len(saved.torch_rng_states)} ranks' state, not {world}")
        torch.set_rng_state(saved.torch_rng_states[rank])
        start_step, history, train_seconds = saved.step, saved.history, saved.train_seconds
        best_loss, best_step, running_steps = saved.best_loss, saved.best_step, saved.running_steps
        running_loss.fill_(saved.running_loss)
        evaluations_without_improvement = saved.evaluations_without_improvement
        best_state = {k: v.to(device) for k, v in saved.best.items()} if saved.best is not None else None
        log(f"resumed from the checkpoint at step {start_step} ({checkpoints.path})")
    log(
        f"training {model.num_parameters():,} parameters on {device}"
        f"{f' × {world} workers' if world > 1 else ''} ({hp['max_iters']} iterations of {tokens_per_step} tokens;"
        f" {decision.why})"
    )
    patience, min_delta = hp.get("patience", 0), hp.get("min_delta", 0.0)
    stopped = {"step": hp["max_iters"], "reason": f"max_iters ({hp['max_iters']}) reached"}
    compile_seconds: float | None = None
    interval = hp.get("checkpoint_interval") or 0
    # The steps since `began` are queued, maybe not run: `pause()` waits for them and counts their time.
    began: float | None = None
    interval_seconds, interval_steps = 0.0, 0  # since the last log line

    def pause() -> float:
        """Wait for the queued steps; add their time to the totals; return it. The host may read after it."""
        nonlocal began, train_seconds, interval_seconds
        check_syncs(False)
        if began is None:
            return 0.0
        _synchronize(device)
        elapsed = time.perf_counter() - began
        train_seconds, interval_seconds, began = train_seconds + elapsed, interval_seconds + elapsed, None
        return elapsed

    wall_start = time.perf_counter()
    model.train()
    for step in range(start_step, hp["max_iters"] + 1):
        last = step == hp["max_iters"]
        evaluating = step % hp["eval_interval"] == 0 or last
        evaluated = bool(history["eval_step"]) and history["eval_step"][-1] == step  # before the checkpoint
        stop = False
        if evaluating:
            pause()
        if rank == 0 and evaluating and not evaluated:
            with eager():
                validation_loss = evaluate_loss(model, validation_tokens, hp["eval_tokens"])
            history["eval_step"].append(step)
            history["validation_loss"].append(validation_loss)
            improved = validation_loss < best_loss - min_delta
            evaluations_without_improvement = 0 if improved else evaluations_without_improvement + 1
            if validation_loss < best_loss:
                best_loss, best_step = validation_loss, step
                best_state = copy.deepcopy(model.state_dict())
            log(f"step {step}: validation loss {validation_loss:.4f} (best {best_loss:.4f} at step {best_step})")
            stop = bool(patience) and evaluations_without_improvement >= patience and not last
        if patience and evaluating:
            stop = _agree(stop, world, device)
        if stop:
            stopped = {
                "step": step,
                "reason": f"early stopping: {patience} evaluations without an improvement of at least {min_delta:g} "
                f"on the best validation loss ({best_loss:.4f} at step {best_step})",
            }
            log(f"step {step}: stopped, {stopped['reason']}")
            break
        if last:
            break
        if checkpoints is not None and interval and step > start_step and step % interval == 0:
            pause()
            rng_states = _all_ranks_rng_states(world, device)  # every rank takes part
            if rank == 0:
                checkpoints.save(
                    TrainingState(step, model.state_dict(), optimizer.state_dict(), best_state, best_loss, best_step,
                                  history, train_seconds, running_loss.item(), running_steps, generator.get_state(),
                                  rng_states, evaluations_without_improvement)
                )  # fmt: skip
        if began is None:
            began = time.perf_counter()
            check_syncs(not (decision.compile and compile_seconds is None))  # compiling may wait: its step is apart
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, hp)
        inputs, targets = next_batch()
        try:
            with autocast(device):
                logits = forward(inputs)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except Exception as error:
            if (failure := compilation.as_compile_error(error)) is not None:
                raise failure from error
            raise
        if hp["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        running_loss += loss.detach()  # on the device: no wait for the step to finish
        running_steps += 1
        interval_steps += 1
        if decision.compile and compile_seconds is None:
            compile_seconds = pause()  # the first compiled step, its warm-up included: measured once
            if rank == 0:
                key = compilation.shape_key(model, hp, device, world)
                kind = compilation.record_warmup(cache, key, compile_seconds)
                log(f"step {step + 1}: compiled, the first step took {compile_seconds:.1f} s ({kind} cache {cache})")
        if (step + 1) % hp["log_interval"] == 0:
            pause()
            mean_loss = _mean_over_ranks(running_loss.item() / running_steps, world, device)
            history["step"].append(step + 1)
            history["train_loss"].append(mean_loss)
            log(
                f"step {step + 1}/{hp['max_iters']}: train loss {mean_loss:.4f}, "
                f"lr {optimizer.param_groups[0]['lr']:.2e}, "
                f"{interval_steps * tokens_per_step / interval_seconds:,.0f} tokens/s"
            )
            running_loss.zero_()
            running_steps, interval_steps, interval_seconds = 0, 0, 0.0
    pause()
    history["stopped"] = stopped

    if rank:
        return None
    if decision.compile:  # the best weights in an uncompiled model: evaluated eager here, returned plain
        model = DecoderTransformer(config).to(device)
    model.load_state_dict(best_state)
    model.eval()
    if checkpoints is not None and clear_checkpoint:
        checkpoints.clear()
    final_validation = evaluate_loss(model, validation_tokens)  # the whole split, best weights
    final_train = evaluate_loss(model, next_batch.segments, max_tokens=len(validation_ids))
    summary = {
        "parameters": model.num_parameters(),
        "device": str(device),
        "workers": world,
        "best_step": best_step,
        "validation_loss": final_validation,
        "train_loss": final_train,
        "tokens_per_second": stopped["step"] * tokens_per_step / train_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
        "stopped_step": stopped["step"],
        "stop_reason": stopped["reason"],
        "compiled": decision.compile,
        "compile_decision": decision.why,
        "compile_seconds": compile_seconds,
    }
    return TrainingResult(model=model.cpu(), history=history, summary=summary)


def _silent(_: str) -> None:
    """The log of ranks other than 0."""
