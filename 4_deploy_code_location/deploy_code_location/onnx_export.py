"""Export the transformer, key/value cache included, to ONNX with the dynamo exporter; compare ONNX Runtime with
PyTorch.

Imports torch: import only inside asset bodies.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

from deploy_code_location.onnx_signature import (
    INPUT_IDS,
    INPUT_NAMES,
    LOGITS,
    OPSET,
    PAST_KEY_VALUES,
    PAST_MASK,
    POSITION_IDS,
    PRESENT_KEY_VALUES,
)
from shared_code_location.model.transformer import DecoderTransformer


class _CachedForward(torch.nn.Module):
    """`DecoderTransformer.forward_cached` as a module's `forward`, which is what the exporter traces."""

    def __init__(self, model: DecoderTransformer):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: torch.Tensor,
        past_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_cached(input_ids, past_key_values, position_ids, past_mask)


def export_onnx(model: DecoderTransformer) -> bytes:
    """A single-file ONNX model with the signature in `onnx_signature`: batch, sequence and cached length dynamic."""
    model = model.eval()
    block = model.config.block_size
    if block < 5:
        raise ValueError(f"ONNX export needs block_size >= 5 to keep its dimensions dynamic, got {block}")
    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=1, max=block)
    past = torch.export.Dim("past", min=0, max=2 * block)
    # Example sizes above 1 keep the exporter from specializing a dynamic dimension to 0 or 1.
    example_ids = torch.zeros((2, 3), dtype=torch.int64)
    example_positions = torch.tensor([[2, 3, 4], [0, 1, 2]], dtype=torch.int64)
    example_past = torch.zeros(model.cache_shape(batch=2, length=2))
    example_mask = torch.tensor([[True, True], [False, False]])
    program = torch.onnx.export(
        _CachedForward(model),
        (example_ids, example_positions, example_past, example_mask),
        input_names=list(INPUT_NAMES),
        output_names=[LOGITS, PRESENT_KEY_VALUES],
        dynamic_shapes={
            "input_ids": {0: batch, 1: sequence},
            "position_ids": {0: batch, 1: sequence},
            "past_key_values": {2: batch, 4: past},
            "past_mask": {0: batch, 1: past},
        },
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        program.save(str(path), external_data=False)
        return path.read_bytes()


def parity_shapes(block_size: int) -> list[tuple[int, int]]:
    """(batch, sequence) shapes the parity check covers: single token, full block, odd sizes, a larger batch."""
    return sorted({(1, 1), (1, block_size), (3, max(1, block_size // 2 + 1)), (8, block_size), (2, 7 % block_size + 1)})


def feeds(ids: np.ndarray, positions: np.ndarray, cache: np.ndarray, past_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The ONNX model's inputs by name."""
    return {INPUT_IDS: ids, POSITION_IDS: positions, PAST_KEY_VALUES: cache, PAST_MASK: past_mask}


def prefill_feeds(model: DecoderTransformer, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs for a prefill of `ids` (batch, sequence): positions from 0, an empty cache."""
    batch, sequence = ids.shape
    positions = np.broadcast_to(np.arange(sequence, dtype=np.int64), (batch, sequence)).copy()
    empty = np.zeros(model.cache_shape(batch, 0), dtype=np.float32)
    return feeds(ids, positions, empty, np.zeros((batch, 0), dtype=bool))


@torch.no_grad()
def max_logit_difference(model: DecoderTransformer, onnx_bytes: bytes, seed: int = 0) -> dict[str, float]:
    """Max |ORT − PyTorch `forward`| of the logits, for random inputs.

    One entry per parity shape, run as a prefill (empty cache); `decode_with_cache`: a prefill of a few tokens then
    one token at a time with the cache fed back, up to the full block, each step against a full forward pass; and
    `batched_decode_with_padding`: rows of different lengths decoding together, each row's cache left-padded with
    masked slots, each row against its own full forward pass.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(seed)
    vocab, block = model.config.vocab_size, model.config.block_size
    differences = {}
    for batch, sequence in parity_shapes(block):
        ids = generator.integers(0, vocab, size=(batch, sequence), dtype=np.int64)
        expected = model(torch.from_numpy(ids)).numpy()
        actual, _ = session.run([LOGITS, PRESENT_KEY_VALUES], prefill_feeds(model, ids))
        if actual.shape != expected.shape:
            raise AssertionError(f"shape {actual.shape} from ONNX Runtime, {expected.shape} from PyTorch")
        differences[f"{batch}x{sequence}"] = float(np.abs(actual - expected).max())

    ids = generator.integers(0, vocab, size=(2, block), dtype=np.int64)
    expected = model(torch.from_numpy(ids)).numpy()
    prefill = min(3, block - 1)
    logits, cache = session.run(None, prefill_feeds(model, ids[:, :prefill]))
    worst = float(np.abs(logits - expected[:, :prefill]).max())
    for position in range(prefill, block):
        step = feeds(ids[:, position : position + 1], np.full((2, 1), position), cache, np.ones((2, position), bool))
        logits, cache = session.run(None, step)
        worst = max(worst, float(np.abs(logits[:, 0] - expected[:, position]).max()))
    if cache.shape != model.cache_shape(2, block):
        raise AssertionError(f"cache grew to {cache.shape}, expected {model.cache_shape(2, block)}")
    differences["decode_with_cache"] = worst
    differences["batched_decode_with_padding"] = _batched_decode_difference(model, session, ids)
    return differences


def _batched_decode_difference(model: DecoderTransformer, session, ids: np.ndarray) -> float:
    """Row 0 starts with a 1-token prompt, row 1 with a 4-token one (row 0's cache left-padded); both then decode
    together one token per step."""
    block = model.config.block_size
    lengths = [1, min(4, block - 1)]
    caches = [session.run(None, prefill_feeds(model, ids[row : row + 1, :n]))[1] for row, n in enumerate(lengths)]
    width = max(lengths)
    cache = np.concatenate([np.pad(c, [(0, 0)] * 4 + [(width - c.shape[4], 0), (0, 0)]) for c in caches], axis=2)
    mask = np.array([[slot >= width - n for slot in range(width)] for n in lengths])
    expected = [model(torch.from_numpy(ids[row : row + 1])).numpy()[0] for row in range(2)]
    worst = 0.0
    steps = block - max(lengths)
    for step in range(steps):
        positions = np.array([[n + step] for n in lengths], dtype=np.int64)
        tokens = np.take_along_axis(ids, positions, axis=1)
        logits, cache = session.run(None, feeds(tokens, positions, cache, mask))
        mask = np.concatenate([mask, np.ones((2, 1), bool)], axis=1)
        for row in range(2):
            worst = max(worst, float(np.abs(logits[row, 0] - expected[row][positions[row, 0]]).max()))
    return worst
