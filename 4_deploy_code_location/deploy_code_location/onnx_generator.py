"""Text generation from a release folder with ONNX Runtime and NumPy only: no torch in the serving process."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy_code_location.onnx_signature import INPUT_IDS, PAST_KEY_VALUES
from shared_code_location.tokenizer import UNKNOWN_ID, CharTokenizer


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
    """Loads `model.onnx`, `vocabulary.json` and `model_card.json` from a release folder and samples text.

    Decoding uses the model's key/value cache: the prompt is run once (prefill), then each new token costs one
    single-position step. Positions are learned up to the block size, so when the cache holds a full block it
    restarts from the most recent half block (one prefill per half block of tokens): the model always sees between
    half a block and a full block of context, never more than it was trained on.
    """

    def __init__(self, release_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.release_dir = Path(release_dir)
        self.card = json.loads((self.release_dir / "model_card.json").read_text(encoding="utf-8"))
        self.tokenizer = CharTokenizer.from_json(
            json.loads((self.release_dir / "vocabulary.json").read_text(encoding="utf-8"))
        )
        config = self.card["model_config"]
        self.block_size = int(config["block_size"])
        self.context_after_slide = max(1, self.block_size // 2)
        head_dim = int(config["n_embd"]) // int(config["n_head"])
        self._empty_cache = np.zeros((int(config["n_layer"]), 2, 1, int(config["n_head"]), 0, head_dim), np.float32)
        options = ort.SessionOptions()
        # Batch-1 decoding of a small model is latency bound: one thread avoids cross-thread hand-offs per op.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.release_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        inputs = {node.name for node in self.session.get_inputs()}
        if inputs != {INPUT_IDS, PAST_KEY_VALUES}:
            raise ValueError(
                f"{self.release_dir / 'model.onnx'} takes inputs {sorted(inputs)}, not {INPUT_IDS} and "
                f"{PAST_KEY_VALUES}: it predates the key/value-cache export. Publish a new release with "
                "`python scripts/cli.py run --from 4_deploy --force`."
            )

    @property
    def version(self) -> str:
        """The release version from its model card."""
        return self.card["version"]

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits of the token after `ids` (1-D, cropped to the block size) and the cache that holds them."""
        context = np.ascontiguousarray(ids[-self.block_size :], dtype=np.int64)[None, :]
        logits, cache = self.session.run(None, {INPUT_IDS: context, PAST_KEY_VALUES: self._empty_cache})
        return logits[0, -1], cache

    def step(self, token: int, cache: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits of the token after `token`, which follows the positions in `cache`; and the grown cache."""
        logits, cache = self.session.run(None, {INPUT_IDS: np.array([[token]], np.int64), PAST_KEY_VALUES: cache})
        return logits[0, -1], cache

    def next_token_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits of the token after `ids` (1-D), the context cropped to the block size."""
        return self.prefill(ids)[0]

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
        start = time.perf_counter()
        new_ids = self.decode(ids, max_new_tokens, lambda logits: sample_token(logits, temperature, top_k, rng))
        seconds = time.perf_counter() - start
        return Generation(
            text=self.tokenizer.decode(new_ids),
            tokens=len(new_ids),
            seconds=seconds,
            unknown_characters=int(np.count_nonzero(ids == UNKNOWN_ID)),
        )

    def decode(self, ids: np.ndarray, max_new_tokens: int, choose: Callable[[np.ndarray], int]) -> np.ndarray:
        """`max_new_tokens` ids after `ids` (1-D, not empty); `choose` picks each one from the next-token logits."""
        buffer = np.empty(len(ids) + max_new_tokens, dtype=np.int64)
        buffer[: len(ids)] = ids
        length = len(ids)
        logits, cache = self.prefill(buffer[:length])
        while True:
            buffer[length] = choose(logits)
            length += 1
            if length == len(buffer):
                return buffer[len(ids) :]
            if cache.shape[4] < self.block_size:
                logits, cache = self.step(int(buffer[length - 1]), cache)
            else:
                logits, cache = self.prefill(buffer[length - self.context_after_slide : length])


def sample_token(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One id from next-token logits, at `temperature`, among the `top_k` likeliest; never the unknown symbol."""
    logits = logits.astype(np.float64) / temperature
    logits[UNKNOWN_ID] = -np.inf  # the unknown symbol is an input placeholder, never an output
    if top_k and top_k < logits.shape[0]:
        kth = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probabilities = np.exp(logits - logits.max())
    # Inverse-CDF sampling: one uniform draw, several times cheaper than rng.choice(p=...).
    cumulative = np.cumsum(probabilities)
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(cumulative) - 1)
