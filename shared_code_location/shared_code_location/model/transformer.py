"""The decoder-only transformer (GPT style) that the model, evaluate and deploy locations all rebuild.

It lives in the shared package because its weights cross locations: a producer and its consumers must agree on the
architecture that the safetensors file describes (`config.py`). Import this module only inside asset bodies: it
imports torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shared_code_location.contract.storage_formats import TensorBundle
from shared_code_location.model.config import TransformerConfig

if TYPE_CHECKING:
    from shared_code_location.model.token_windows import Tokens

MODEL_FORMAT = "decoder-transformer/v1"


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier positions."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, time, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        return tuple(t.view(batch, time, self.n_head, channels // self.n_head).transpose(1, 2) for t in (q, k, v))

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        batch, _, time, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, time, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        dropout = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True))

    def forward_cached(
        self, x: torch.Tensor, past: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of the new positions `x` over the cached keys and values `past` (2, B, heads, P, head_dim)
        plus their own; returns the output and the grown cache (2, B, heads, P + T, head_dim)."""
        q, k, v = self._heads(x)
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
        # is_causal would align the mask top-left, wrong when there are fewer queries than keys: pass it explicitly.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._merge(y), torch.stack([k, v])


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wide, GELU."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(
        self, x: torch.Tensor, past: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` for new positions only, reusing this block's cached keys and values."""
        attended, present = self.attn.forward_cached(self.ln_1(x), past, mask)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), present


class DecoderTransformer(nn.Module):
    """Token + position embeddings, `n_layer` pre-LN blocks, final LayerNorm, LM head tied to the embeddings."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: fewer parameters, better small-data loss
        self.apply(self._init_weights)
        # GPT-2 scaling of residual projections keeps the residual stream's variance flat with depth.
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Trainable parameters, counting tied weights once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, time, vocab) for token ids of shape (batch, time), time <= block_size."""
        time = idx.shape[1]
        positions = torch.arange(time, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def cache_shape(self, batch: int, length: int) -> tuple[int, ...]:
        """Shape of a key/value cache holding `length` positions: (n_layer, 2, batch, n_head, length, head_dim)."""
        config = self.config
        return (config.n_layer, 2, batch, config.n_head, length, config.n_embd // config.n_head)

    def empty_cache(self, batch: int = 1) -> torch.Tensor:
        """A key/value cache holding no positions, for `forward_cached` to start from."""
        return self.wte.weight.new_zeros(self.cache_shape(batch, 0))

    def forward_cached(
        self,
        idx: torch.Tensor,
        past: torch.Tensor,
        positions: torch.Tensor | None = None,
        past_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (batch, time, vocab) of new tokens `idx` that follow the keys and values held in the cache `past`
        (n_layer, 2, batch, n_head, P, head_dim), P ≥ 0 (see `empty_cache`). Returns them and the cache grown to
        P + time slots. With an empty cache this equals `forward`; decoding one token at a time then costs O(context)
        instead of O(context²) per token.

        By default every cached slot is a real token and the new tokens sit at positions P, P + 1, ... . For a batch
        of sequences at different lengths (continuous batching), give each token's `positions` (batch, time) and
        `past_mask` (batch, P), true where a cached slot holds a real token of that row: a row then ignores its
        padding. Positions are learned, so each must stay below block_size.
        """
        batch, time = idx.shape
        past_length = past.shape[4]
        new_slots = torch.arange(time, device=idx.device)
        if positions is None:
            positions = (new_slots + past_length)[None, :].expand(batch, time)
        if past_mask is None:
            past_mask = torch.ones((batch, past_length), dtype=torch.bool, device=idx.device)
        # New token i sees the real cached keys of its row and the new keys up to itself.
        causal = new_slots[None, :] <= new_slots[:, None]
        mask = torch.cat(
            [past_mask[:, None, :].expand(batch, time, past_length), causal[None].expand(batch, time, time)], dim=2
        )[:, None]
        x = self.drop(self.wte(idx) + self.wpe(positions))
        presents = []
        for layer, block in enumerate(self.blocks):
            x, present = block.forward_cached(x, past[layer], mask)
            presents.append(present)
        return self.lm_head(self.ln_f(x)), torch.stack(presents)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `max_new_tokens` continuations of `idx`, cropping the context to the block size."""
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size :])[:, -1, :]
            next_id = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """One id per row from last-position logits; temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (faster, same loss); a no-op context on the CPU and on MPS, which train in float32
    (bf16 on MPS needs macOS 14, and fp16 would need loss scaling)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


#: What `torch.compile` puts before the names of a compiled module's weights (`OptimizedModule._orig_mod`).
COMPILED_PREFIX = "_orig_mod."


def plain_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the names an uncompiled model has: every `_orig_mod.` that `torch.compile` wrapping added is
    dropped (a model compiled whole, or one of its blocks), so checkpoints and weights files never depend on how
    the model was compiled."""
    return {name.replace(COMPILED_PREFIX, ""): tensor for name, tensor in state.items()}


def unwrapped(model: nn.Module) -> nn.Module:
    """The module inside `torch.compile`'s and DDP's wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        inner = inner if inner is not None else getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@torch.no_grad()
def window_metrics(
    model: DecoderTransformer, tokens: Tokens, max_tokens: int = 0, batch_size: int = 64
) -> dict[str, float]:
    """Mean next-token cross-entropy (nats/token) and accuracy over consecutive non-overlapping windows of a block.

    The one implementation of the windowed loss: training's validation loss and the evaluation's test loss both come
    from here, so they are comparable. `tokens`: the split's `TokenShards` (streamed shard by shard in bounded
    memory), a tensor or array of ids, or device-resident segments (`token_windows.to_device`); a window never
    crosses from one shard to the next. Deterministic: the same tokens always give the same windows. `max_tokens` > 0
    uses only the first windows. Runs on the model's device, in eval mode, and restores the mode after.
    """
    from shared_code_location.model.token_windows import window_batches

    usable, batches = window_batches(tokens, model.config.block_size, max_tokens, batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for inputs, targets in batches:
        x, y = inputs.to(device).long(), targets.to(device).long()
        with autocast(device):
            logits = model(x).float()
        total_loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    return {"loss": total_loss / usable, "accuracy": correct / usable, "tokens": usable}


def to_tensor_bundle(model: DecoderTransformer, **metadata: Any) -> TensorBundle:
    """Weights as float32 numpy arrays (the tied LM head stored once, as `wte.weight`) plus config and metadata."""
    model = unwrapped(model)  # a compiled or DDP-wrapped model stores the names of the plain one
    tensors = {
        name: tensor.detach().to("cpu", torch.float32).numpy()
        for name, tensor in plain_state_dict(model.state_dict()).items()
        if name != "lm_head.weight"
    }
    return TensorBundle(tensors, {"format": MODEL_FORMAT, "config": model.config.to_json(), **metadata})


def from_tensor_bundle(bundle: TensorBundle, device: str | torch.device = "cpu") -> DecoderTransformer:
    """Rebuild the model (in eval mode) from a bundle written by `to_tensor_bundle`."""
    if bundle.metadata.get("format") != MODEL_FORMAT:
        raise ValueError(f"not a {MODEL_FORMAT} weights file: format={bundle.metadata.get('format')!r}")
    model = DecoderTransformer(TransformerConfig(**bundle.metadata["config"]))
    state = {name: torch.from_numpy(np.asarray(array)) for name, array in bundle.tensors.items()}
    state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def choose_device(requested: str, cuda: bool, mps: bool) -> str:
    """The device `requested` names on a machine that has CUDA (`cuda`) and Apple's MPS (`mps`) or not: `auto` is
    CUDA, then MPS, then the CPU; `cpu`, `cuda` and `mps` force one, and raise `RuntimeError` where it is absent."""
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    available = {"cpu": True, "cuda": cuda, "mps": mps}
    if requested not in available:
        raise ValueError(f"device {requested!r} is not one of auto, {', '.join(available)}")
    if not available[requested]:
        raise RuntimeError(f"device {requested!r} was requested but torch sees no {requested.upper()} device")
    return requested


def pick_device(requested: str = "auto") -> torch.device:
    """`choose_device` on this machine: `auto` picks CUDA, then MPS, then the CPU."""
    mps = getattr(torch.backends, "mps", None)
    return torch.device(choose_device(requested, torch.cuda.is_available(), bool(mps and mps.is_available())))
