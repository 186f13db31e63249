"""The training loop: AdamW, linear warmup then cosine decay, gradient clipping, periodic validation, best
checkpoint kept. Imports torch: import this module only inside the asset body."""

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
from shared_code_location.transformer import (
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


def batch_sampler(tokens: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    """A function returning random (inputs, targets) windows of the token stream; windows are views, not copies."""
    if tokens.numel() < block_size + 1:
        raise ValueError(f"the split has {tokens.numel()} tokens, fewer than block_size + 1 = {block_size + 1}")
    windows = tokens.unfold(0, block_size + 1, 1)  # (n_windows, block_size + 1)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        rows = windows[torch.randint(windows.shape[0], (batch_size,), generator=generator, device=tokens.device)]
        return rows[:, :-1], rows[:, 1:]

    return sample


def evaluate_loss(model: DecoderTransformer, tokens: torch.Tensor, max_tokens: int = 0) -> float:
    """Mean next-token loss (nats) over consecutive windows of `tokens`: `window_metrics`, as the evaluation uses."""
    return window_metrics(model, tokens, max_tokens)["loss"]


def train(
    train_ids: np.ndarray,
    validation_ids: np.ndarray,
    vocab_size: int,
    hp: dict[str, Any],
    log: Callable[[str], None] = print,
    checkpoints: CheckpointStore | None = None,
) -> TrainingResult:
    """Train a `DecoderTransformer` with hyperparameters `hp` (see `presets.PRESETS`) and return its best state.

    With `checkpoints`, the whole state is saved every `hp["checkpoint_interval"]` steps and training resumes from
    a saved state of the same key, continuing exactly as if it had never stopped (on CPU, bit for bit).
    """
    device = pick_device(hp["device"])
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
    model = DecoderTransformer(config).to(device)
    optimizer = make_optimizer(model, hp, device)
    train_tokens = torch.from_numpy(train_ids.astype(np.int64)).to(device)
    validation_tokens = torch.from_numpy(validation_ids.astype(np.int64)).to(device)
    generator = torch.Generator(device=device).manual_seed(hp["seed"])
    next_batch = batch_sampler(train_tokens, hp["block_size"], hp["batch_size"], generator)
    tokens_per_step = hp["batch_size"] * hp["block_size"]

    history: dict[str, list[float]] = {"step": [], "train_loss": [], "eval_step": [], "validation_loss": []}
    best_loss, best_state, best_step = math.inf, None, 0
    train_seconds, running_loss, running_steps = 0.0, 0.0, 0
    start_step = 0
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        generator.set_state(saved.generator_state)
        torch.set_rng_state(saved.torch_rng_state)
        start_step, history, train_seconds = saved.step, saved.history, saved.train_seconds
        best_loss, best_step, running_loss, running_steps = (
            saved.best_loss, saved.best_step, saved.running_loss, saved.running_steps
        )  # fmt: skip
        best_state = {k: v.to(device) for k, v in saved.best.items()} if saved.best is not None else None
        log(f"resumed from the checkpoint at step {start_step} ({checkpoints.path})")
    log(
        f"training {model.num_parameters():,} parameters on {device} "
        f"({hp['max_iters']} iterations of {tokens_per_step} tokens)"
    )
    wall_start = time.perf_counter()
    model.train()
    interval = hp.get("checkpoint_interval") or 0
    for step in range(start_step, hp["max_iters"] + 1):
        last = step == hp["max_iters"]
        evaluated = bool(history["eval_step"]) and history["eval_step"][-1] == step  # before the checkpoint
        if (step % hp["eval_interval"] == 0 or last) and not evaluated:
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
            checkpoints.save(
                TrainingState(step, model.state_dict(), optimizer.state_dict(), best_state, best_loss, best_step,
                              history, train_seconds, running_loss, running_steps, generator.get_state(),
                              torch.get_rng_state())
            )  # fmt: skip
        step_start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, hp)
        inputs, targets = next_batch()
        with autocast(device):
            logits = model(inputs)
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
            mean_loss = running_loss / running_steps
            history["step"].append(step + 1)
            history["train_loss"].append(mean_loss)
            log(
                f"step {step + 1}/{hp['max_iters']}: train loss {mean_loss:.4f}, "
                f"lr {optimizer.param_groups[0]['lr']:.2e}, "
                f"{(step + 1) * tokens_per_step / train_seconds:,.0f} tokens/s"
            )
            running_loss, running_steps = 0.0, 0

    model.load_state_dict(best_state)
    model.eval()
    if checkpoints is not None:
        checkpoints.clear()
    final_validation = evaluate_loss(model, validation_tokens)  # the whole split, best weights
    final_train = evaluate_loss(model, train_tokens, max_tokens=len(validation_ids))
    summary = {
        "parameters": model.num_parameters(),
        "device": str(device),
        "best_step": best_step,
        "validation_loss": final_validation,
        "train_loss": final_train,
        "tokens_per_second": hp["max_iters"] * tokens_per_step / train_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    return TrainingResult(model=model.cpu(), history=history, summary=summary)
