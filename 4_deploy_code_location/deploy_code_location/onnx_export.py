"""Export the transformer, key/value cache included, to ONNX with the dynamo exporter; compare ONNX Runtime with
PyTorch.

Imports torch: import only inside asset bodies.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

from deploy_code_location.onnx_signature import INPUT_IDS, LOGITS, OPSET, PAST_KEY_VALUES, PRESENT_KEY_VALUES
from shared_code_location.transformer import DecoderTransformer


class _CachedForward(torch.nn.Module):
    """`DecoderTransformer.forward_cached` as a module's `forward`, which is what the exporter traces."""

    def __init__(self, model: DecoderTransformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, past_key_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_cached(input_ids, past_key_values)


def export_onnx(model: DecoderTransformer) -> bytes:
    """A single-file ONNX model with the signature in `onnx_signature`: batch, sequence and cached length dynamic."""
    model = model.eval()
    block = model.config.block_size
    if block < 5:
        raise ValueError(f"ONNX export needs block_size >= 5 to keep its dimensions dynamic, got {block}")
    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=1, max=block)
    past = torch.export.Dim("past", min=0, max=block - 1)
    # Example sizes above 1 keep the exporter from specializing a dynamic dimension to 0 or 1.
    example_ids = torch.zeros((2, 3), dtype=torch.int64)
    example_past = torch.zeros(model.cache_shape(batch=2, length=2))
    program = torch.onnx.export(
        _CachedForward(model),
        (example_ids, example_past),
        input_names=[INPUT_IDS, PAST_KEY_VALUES],
        output_names=[LOGITS, PRESENT_KEY_VALUES],
        dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "past_key_values": {2: batch, 4: past}},
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


@torch.no_grad()
def max_logit_difference(model: DecoderTransformer, onnx_bytes: bytes, seed: int = 0) -> dict[str, float]:
    """Max |ORT − PyTorch `forward`| of the logits, for random inputs.

    One entry per parity shape, run as a prefill (empty cache), and `decode_with_cache`: a prefill of a few tokens
    then one token at a time with the cache fed back, up to the full block, each step against a full forward pass.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(seed)
    vocab, block = model.config.vocab_size, model.config.block_size
    differences = {}
    for batch, sequence in parity_shapes(block):
        ids = generator.integers(0, vocab, size=(batch, sequence), dtype=np.int64)
        expected = model(torch.from_numpy(ids)).numpy()
        empty = np.zeros(model.cache_shape(batch, 0), dtype=np.float32)
        actual, _ = session.run([LOGITS, PRESENT_KEY_VALUES], {INPUT_IDS: ids, PAST_KEY_VALUES: empty})
        if actual.shape != expected.shape:
            raise AssertionError(f"shape {actual.shape} from ONNX Runtime, {expected.shape} from PyTorch")
        differences[f"{batch}x{sequence}"] = float(np.abs(actual - expected).max())

    ids = generator.integers(0, vocab, size=(2, block), dtype=np.int64)
    expected = model(torch.from_numpy(ids)).numpy()
    prefill = min(3, block - 1)
    cache = np.zeros(model.cache_shape(2, 0), dtype=np.float32)
    logits, cache = session.run(None, {INPUT_IDS: ids[:, :prefill], PAST_KEY_VALUES: cache})
    worst = float(np.abs(logits - expected[:, :prefill]).max())
    for position in range(prefill, block):
        logits, cache = session.run(None, {INPUT_IDS: ids[:, position : position + 1], PAST_KEY_VALUES: cache})
        worst = max(worst, float(np.abs(logits[:, 0] - expected[:, position]).max()))
    if cache.shape != model.cache_shape(2, block):
        raise AssertionError(f"cache grew to {cache.shape}, expected {model.cache_shape(2, block)}")
    differences["decode_with_cache"] = worst
    return differences
