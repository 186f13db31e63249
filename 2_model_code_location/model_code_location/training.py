"""The training loop: AdamW, linear warmup then cosine decay, gradient clipping, periodic validation, best
checkpoint kept. One process, or one rank of a data-parallel group (DDP) that Ray Train's `TorchTrainer` starts.
Imports torch: import this module only inside the asset body."""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from model_code_location.checkpoints import CheckpointStore, TrainingState
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
    history: dict[str, list[float]]
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
    """Train a `DecoderTransformer` with hyperparameters `hp` (see `presets.PRESETS`) and return its best state.

    With `checkpoints`, the whole state is saved every `hp["checkpoint_interval"]` steps and training resumes from
    a saved state of the same key, continuing exactly as if it had never stopped (on CPU, bit for bit). The
    checkpoint is removed at the end unless `clear_checkpoint` is off (the caller then removes it once the result
    is safe).

    In a `torch.distributed` process group (Ray Train's `TorchTrainer` sets one up), this is one rank of data-parallel
    training: each rank computes the gradients of its shard of every batch (`batch_sampler`), DDP averages them,
    and rank 0 alone validates, logs, saves checkpoints and returns the result; the other ranks return None. A
    seeded run is reproducible for a given number of workers. `device`: default `hp["device"]` (`pick_device`).
    """
    rank, world = process_group()
    device = device or pick_device(hp["device"])
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

    history: dict[str, list[float]] = {"step": [], "train_loss": [], "eval_step": [], "validation_loss": []}
    best_loss, best_state, best_step = math.inf, None, 0
    train_seconds, running_loss, running_steps = 0.0, 0.0, 0
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
        best_loss, best_step, running_loss, running_steps = (
            saved.best_loss, saved.best_step, saved.running_loss, saved.running_steps
        )  # fmt: skip
        best_state = {k: v.to(device) for k, v in saved.best.items()} if saved.best is not None else None
        log(f"resumed from the checkpoint at step {start_step} ({checkpoints.path})")
    log(
        f"training {model.num_parameters():,} parameters on {device}"
        f"{f' × {world} workers' if world > 1 else ''} ({hp['max_iters']} iterations of {tokens_per_step} tokens)"
    )
    wall_start = time.perf_counter()
    model.train()
    interval = hp.get("checkpoint_interval") or 0
    for step in range(start_step, hp["max_iters"] + 1):
        last = step == hp["max_iters"]
        evaluated = bool(history["eval_step"]) and history["eval_step"][-1] == step  # before the checkpoint
        if rank == 0 and (step % hp["eval_interval"] == 0 or last) and not evaluated:
            if device.type == "cuda":
                torch.cuda.synchronize()
            validation_loss = evaluate_loss(model, validation_tokens, hp["eval_tokens"])
            history["eval_step"].append(step)
            history["validation_loss"].append(validation_loss)
            if validation_loss < best_loss:
                best_loss, best_step = validation_loss, step
                best_state = copy.deepcopy(model.state_dict())
            log(f"step {step}: validation loss {validation_loss:.4f} (best {best_loss:.4f} at step {best_step})")
        if last:
            break
        if checkpoints is not None and interval and step > start_step and step % interval == 0:
            rng_states = _all_ranks_rng_states(world, device)  # every rank takes part
            if rank == 0:
                checkpoints.save(
                    TrainingState(step, model.state_dict(), optimizer.state_dict(), best_state, best_loss, best_step,
                                  history, train_seconds, running_loss, running_steps, generator.get_state(),
                                  rng_states)
                )  # fmt: skip
        step_start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, hp)
        inputs, targets = next_batch()
        with autocast(device):
            logits = forward(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hp["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        running_loss += loss.item()  # .item() syncs, so the step time below is real on CUDA too
        running_steps += 1
        train_seconds += time.perf_counter() - step_start
        if (step + 1) % hp["log_interval"] == 0:
            mean_loss = _mean_over_ranks(running_loss / running_steps, world, device)
            history["step"].append(step + 1)
            history["train_loss"].append(mean_loss)
            log(
                f"step {step + 1}/{hp['max_iters']}: train loss {mean_loss:.4f}, "
                f"lr {optimizer.param_groups[0]['lr']:.2e}, "
                f"{(step + 1) * tokens_per_step / train_seconds:,.0f} tokens/s"
            )
            running_loss, running_steps = 0.0, 0

    if rank:
        return None
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
        "tokens_per_second": hp["max_iters"] * tokens_per_step / train_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    return TrainingResult(model=model.cpu(), history=history, summary=summary)


def _silent(_: str) -> None:
    """The log of ranks other than 0."""
