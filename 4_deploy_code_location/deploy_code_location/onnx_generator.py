"""Text generation from a release folder with ONNX Runtime and NumPy only: no torch in the serving process."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared_code_location.tokenizer import UNKNOWN_ID, CharTokenizer

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"


class GenerationRequestError(ValueError):
    """A generation request that cannot be served as asked (the message says why)."""


@dataclass
class Generation:
    """One generation's result."""

    text: str
    tokens: int
    seconds: float
    unknown_characters: int


class OnnxGenerator:
    """Loads `model.onnx`, `vocabulary.json` and `model_card.json` from a release folder and samples text."""

    def __init__(self, release_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.release_dir = Path(release_dir)
        self.card = json.loads((self.release_dir / "model_card.json").read_text(encoding="utf-8"))
        self.tokenizer = CharTokenizer.from_json(
            json.loads((self.release_dir / "vocabulary.json").read_text(encoding="utf-8"))
        )
        self.block_size = int(self.card["model_config"]["block_size"])
        options = ort.SessionOptions()
        # Batch-1 decoding of a small model is latency bound: one thread avoids cross-thread hand-offs per op.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.release_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    @property
    def version(self) -> str:
        """The release version from its model card."""
        return self.card["version"]

    def next_token_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits of the token after `ids` (1-D), the context cropped to the block size."""
        context = ids[-self.block_size :][None, :]
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: context})
        return logits[0, -1]

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> Generation:
        """Sample a continuation of `prompt`. Characters outside the vocabulary become the unknown symbol (id 0)."""
        if not prompt:
            raise GenerationRequestError("prompt is empty: give at least one character")
        if temperature <= 0:
            raise GenerationRequestError("temperature must be > 0")
        if max_new_tokens < 1:
            raise GenerationRequestError("max_new_tokens must be at least 1")
        rng = np.random.default_rng(seed)
        ids = self.tokenizer.encode(prompt).astype(np.int64)
        unknown = int(np.count_nonzero(ids == 0))
        buffer = np.empty(len(ids) + max_new_tokens, dtype=np.int64)
        buffer[: len(ids)] = ids
        length = len(ids)
        start = time.perf_counter()
        for _ in range(max_new_tokens):
            logits = self.next_token_logits(buffer[:length]).astype(np.float64) / temperature
            logits[UNKNOWN_ID] = -np.inf  # the unknown symbol is an input placeholder, never an output
            if top_k and top_k < logits.shape[0]:
                kth = np.partition(logits, -top_k)[-top_k]
                logits = np.where(logits < kth, -np.inf, logits)
            probabilities = np.exp(logits - logits.max())
            # Inverse-CDF sampling: one uniform draw, several times cheaper than rng.choice(p=...).
            cumulative = np.cumsum(probabilities)
            buffer[length] = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(cumulative) - 1)
            length += 1
        seconds = time.perf_counter() - start
        text = self.tokenizer.decode(buffer[len(ids) : length])
        return Generation(text=text, tokens=max_new_tokens, seconds=seconds, unknown_characters=unknown)
