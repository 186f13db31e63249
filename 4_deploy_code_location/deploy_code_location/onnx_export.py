"""Export the transformer to ONNX with the dynamo exporter, and compare ONNX Runtime with PyTorch.

Imports torch: import only inside asset bodies.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

from shared_code_location.transformer import DecoderTransformer

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
OPSET = 18


def export_onnx(model: DecoderTransformer) -> bytes:
    """A single-file ONNX model: `input_ids` int64 (batch, sequence) → `logits` float32 (batch, sequence, vocab),
    both dimensions dynamic, sequence up to the block size."""
    model = model.eval()
    block = model.config.block_size
    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=1, max=block)
    example = torch.zeros((2, min(block, 8)), dtype=torch.int64)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"idx": {0: batch, 1: sequence}},
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
    """Max |ORT − PyTorch| of the logits for random inputs of each parity shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(seed)
    differences = {}
    for batch, sequence in parity_shapes(model.config.block_size):
        ids = generator.integers(0, model.config.vocab_size, size=(batch, sequence), dtype=np.int64)
        expected = model(torch.from_numpy(ids)).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: ids})
        if actual.shape != expected.shape:
            raise AssertionError(f"shape {actual.shape} from ONNX Runtime, {expected.shape} from PyTorch")
        differences[f"{batch}x{sequence}"] = float(np.abs(actual - expected).max())
    return differences
