"""Token shards as PyTorch sees them: random training batches and consecutive evaluation windows, without ever
concatenating a split or widening it to int64 whole.

- `BatchSampler` draws `batch_size` random windows of `block_size + 1` tokens across all shards of a split. When the
  split fits the device's budget (`resident_budget`), its tokens live on the device in a compact integer type, shard
  after shard in one buffer, and windows are gathered there: no host work and no host sync per step. Otherwise
  windows are gathered on the host from the memory-mapped shards, into pinned memory, and copied asynchronously.
  With one shard the draw is exactly `torch.randint(n - block_size)` over the token stream, as it always was.
- `window_batches` streams a split's consecutive windows, shard by shard, in bounded memory: what
  `window_metrics` (validation and test loss) reads. A window never crosses from one shard to the next.

Imports torch: import this module only inside asset bodies.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import numpy as np
import torch

from shared_code_location.contract.token_shards import TokenShards

#: On a CPU the "device" is host memory, where the shards are memory-mapped already: a split larger than this is
#: read from the maps rather than copied.
CPU_RESIDENT_BYTES = 256 << 20
#: On a GPU, the share of its free memory (after the model is placed) that resident tokens may take.
GPU_RESIDENT_SHARE = 0.25
#: Tokens copied to the device, or streamed for evaluation, per piece: bounds host memory.
_PIECE_TOKENS = 1 << 24

#: What a split can be handed over as: the reader of its shards, one array or tensor of ids, or device-resident
#: segments (one tensor per shard).
Tokens = Union[TokenShards, np.ndarray, torch.Tensor, Sequence[torch.Tensor]]  # noqa: UP007 (a runtime alias)


def as_token_shards(tokens: TokenShards | np.ndarray, vocab_size: int | None = None) -> TokenShards:
    """`tokens` as a `TokenShards` (an array becomes one in-memory shard)."""
    return tokens if isinstance(tokens, TokenShards) else TokenShards.from_array(np.asarray(tokens), vocab_size)


def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest torch integer type that indexes the embedding for every id of the vocabulary."""
    if vocab_size <= 256:
        return torch.uint8
    return torch.int16 if vocab_size <= 2**15 else torch.int32


def resident_budget(device: torch.device) -> int:
    """Bytes of tokens that may live on `device`: a share of a GPU's free memory, `CPU_RESIDENT_BYTES` on a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_RESIDENT_SHARE)
    return CPU_RESIDENT_BYTES


def to_device(tokens: TokenShards, device: torch.device, budget: int | None = None) -> list[torch.Tensor] | None:
    """Each shard of `tokens` as a tensor of vocabulary ids in `compact_dtype` on `device` (views of one buffer,
    shard after shard), copied piece by piece (bounded host memory); None if the split is larger than `budget`
    (default: `resident_budget(device)`)."""
    buffer = _upload(tokens, device, budget)
    if buffer is None:
        return None
    offsets = np.cumsum([0] + [shard.tokens for shard in tokens.shards])
    return [buffer[start:stop] for start, stop in itertools.pairwise(offsets)]


def _upload(tokens: TokenShards, device: torch.device, budget: int | None) -> torch.Tensor | None:
    dtype = compact_dtype(tokens.vocab_size)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if tokens.tokens * itemsize > (resident_budget(device) if budget is None else budget):
        return None
    buffer = torch.empty(tokens.tokens, dtype=dtype, device=device)
    offset = 0
    for index, shard in enumerate(tokens.shards):
        for start in range(0, shard.tokens, _PIECE_TOKENS):
            piece = torch.from_numpy(tokens.read(index, start, start + _PIECE_TOKENS).astype(_numpy(dtype)))
            buffer[offset + start : offset + start + len(piece)].copy_(piece)
        offset += shard.tokens
    return buffer


def _numpy(dtype: torch.dtype) -> np.dtype:
    return {torch.uint8: np.dtype(np.uint8), torch.int16: np.dtype(np.int16), torch.int32: np.dtype(np.int32)}[dtype]


class BatchSampler:
    """Random (inputs, targets) windows of a split; call it for the next batch. See the module docstring.

    Every rank draws the same `batch_size` window positions from the same generator state and keeps its own
    contiguous `batch_size // world` of them: the ranks together see exactly the batch one process would, so a run
    learns the same thing on any number of workers (up to the order of floating-point sums).
    """

    def __init__(
        self,
        tokens: TokenShards | np.ndarray | torch.Tensor,
        block_size: int,
        batch_size: int,
        generator: torch.Generator | int,
        rank: int = 0,
        world: int = 1,
        device: torch.device | None = None,
        budget: int | None = None,
    ):
        if isinstance(tokens, torch.Tensor):  # a tensor already placed: one resident segment, as given
            self.device, lengths, buffer = tokens.device, [tokens.numel()], tokens
        else:
            tokens = as_token_shards(tokens)
            self.device = device or torch.device("cpu")
            lengths = [shard.tokens for shard in tokens.shards]
            buffer = _upload(tokens, self.device, budget)
        self.tokens, self._buffer = tokens, buffer
        windows = np.array([max(0, n - block_size) for n in lengths], dtype=np.int64)
        if not windows.sum():
            where = "" if len(lengths) == 1 else f" in any of its {len(lengths)} shards"
            raise ValueError(
                f"the split has {sum(lengths)} tokens, fewer than block_size + 1 = {block_size + 1}{where}"
            )
        if batch_size % world:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of the number of workers ({world})")
        self.block_size, self.batch_size, self.windows = block_size, batch_size, int(windows.sum())
        self._keep = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self.resident = buffer is not None
        # Per shard, on the device (views of the buffer); else the shards themselves, read from their memory maps.
        self.segments: Tokens = tokens
        if self.resident:
            offsets = np.cumsum([0, *lengths])
            self.segments = [buffer[a:b] for a, b in itertools.pairwise(offsets)]
        if isinstance(generator, int):
            # Positions are drawn where they are used: on the device for resident tokens, else on the host.
            where = self.device if self.resident else torch.device("cpu")
            generator = torch.Generator(device=where).manual_seed(generator)
        self.generator = generator
        first_window = np.concatenate([[0], np.cumsum(windows)[:-1]])
        first_token = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._window_ends, self._first_window, self._first_token = np.cumsum(windows), first_window, first_token
        self._span = np.arange(block_size + 1)
        if self.resident:
            on = self.device
            self._device_span = torch.arange(block_size + 1, device=on)
            self._device_window_ends = torch.from_numpy(self._window_ends).to(on)
            self._device_first_window = torch.from_numpy(first_window).to(on)
            self._device_first_token = torch.from_numpy(first_token).to(on)
        self._gather: Callable[[torch.Tensor], torch.Tensor] = self._on_device if self.resident else self._on_host

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.randint(
            self.windows, (self.batch_size,), generator=self.generator, device=self.generator.device
        )
        rows = self._gather(positions[self._keep])
        return rows[:, :-1], rows[:, 1:]

    def _on_device(self, positions: torch.Tensor) -> torch.Tensor:
        positions = positions.to(self.device)
        if len(self._window_ends) == 1:
            starts = positions
        else:
            shard = torch.searchsorted(self._device_window_ends, positions, right=True)
            starts = self._device_first_token[shard] + positions - self._device_first_window[shard]
        return self._buffer[starts[:, None] + self._device_span].long()

    def _on_host(self, positions: torch.Tensor) -> torch.Tensor:
        positions = positions.cpu().numpy()  # drawn on the host already, unless a device generator was passed
        shard = np.searchsorted(self._window_ends, positions, side="right")
        pinned = self.device.type == "cuda"
        dtype = compact_dtype(self.tokens.vocab_size)
        rows_tensor = torch.empty((len(positions), self.block_size + 1), dtype=dtype, pin_memory=pinned)
        rows = rows_tensor.numpy()
        for index in np.unique(shard):
            chosen = shard == index
            starts = positions[chosen] - self._first_window[index]
            rows[chosen] = self.tokens.gather(int(index), starts[:, None] + self._span)
        # From pinned memory the copy is asynchronous; the caching host allocator keeps the block until it is done.
        return rows_tensor.to(self.device, non_blocking=pinned).long()


def _segment_readers(tokens: Tokens) -> list[tuple[int, Callable[[int, int], torch.Tensor]]]:
    """(length, read(start, stop) → int64 tensor) of each segment of `tokens`, in order; windows never cross from
    one segment to the next. A tensor is one segment; `TokenShards` are read from their shards as needed."""
    if isinstance(tokens, torch.Tensor):
        tokens = [tokens]
    if isinstance(tokens, np.ndarray):
        tokens = as_token_shards(tokens)
    if isinstance(tokens, TokenShards):
        return [
            (shard.tokens, lambda start, stop, i=i: torch.from_numpy(tokens.read(i, start, stop).astype(np.int64)))
            for i, shard in enumerate(tokens.shards)
        ]
    return [(tensor.numel(), lambda start, stop, t=tensor: t[start:stop]) for tensor in tokens]


def window_batches(
    tokens: Tokens, block: int, max_tokens: int = 0, batch_size: int = 64
) -> tuple[int, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """(usable tokens, batches): consecutive non-overlapping windows of `block` tokens with their next-token targets,
    `batch_size` windows at a time, segment by segment, read `_PIECE_TOKENS` at a time. `max_tokens` > 0 keeps only
    the first windows (at least one). Raises ValueError when no window fits."""
    parts = _segment_readers(tokens)
    usable = [max(0, (length - 1) // block * block) for length, _ in parts]
    total = sum(usable)
    if max_tokens:
        total = min(total, max(block, max_tokens // block * block))
    if total <= 0:
        raise ValueError(f"{sum(length for length, _ in parts)} tokens cannot fill one window of {block + 1}")

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        left = total
        piece = max(1, _PIECE_TOKENS // (batch_size * block)) * batch_size * block  # whole batches per piece
        for (_, read), size in zip(parts, usable, strict=True):
            size = min(size, left)
            for start in range(0, size, piece):
                ids = read(start, min(start + piece, size) + 1)
                inputs, targets = ids[:-1].view(-1, block), ids[1:].view(-1, block)
                for first in range(0, inputs.shape[0], batch_size):
                    yield inputs[first : first + batch_size], targets[first : first + batch_size]
            left -= size
            if not left:
                return

    return total, batches()
