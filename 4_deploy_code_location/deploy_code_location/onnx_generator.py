"""Text generation from a release folder with ONNX Runtime and NumPy only: no torch in the serving process.

`DecodeBatch` is the one decoding loop. A single `generate` call runs it with one sequence; the server runs it with
every request that is decoding at the same moment, so that they share one ONNX Runtime call per step (continuous
batching: sequences join and leave between steps). A sequence's tokens do not depend on what else is in the batch:
each row has its own positions, cache slots and random generator.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy_code_location.onnx_signature import INPUT_IDS, INPUT_NAMES, PAST_KEY_VALUES, PAST_MASK, POSITION_IDS
from deploy_code_location.sampling import END, Sampler, sample_rows
from deploy_code_location.sampling import sample_token as sample_token  # the engine's own, also importable here
from shared_code_location.model.tokenizer import UNKNOWN_ID, CharTokenizer


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
    """Loads `model.onnx`, `vocabulary.json`, `model_card.json` and the chat template from a release folder (local,
    or object storage: the files are read into memory, nothing is written to disk) and samples text.

    Decoding uses the model's key/value cache: the prompt is run once (prefill), then each new token costs one
    single-position step. Positions are learned up to the block size, so when a sequence's cache holds a full block
    it restarts from its most recent half block (one prefill per half block of tokens): the model always sees between
    half a block and a full block of context, never more than it was trained on.
    """

    def __init__(self, release_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        from deploy_code_location.chat_template import ChatTemplate
        from shared_code_location.contract.storage import storage_errors, storage_path

        if isinstance(release_dir, str):  # a folder, or a URI (s3://...) reached with the settings' S3 options
            release_dir = storage_path(release_dir) if "://" in release_dir else Path(release_dir)
        self.release_dir = release_dir
        with storage_errors(self.release_dir):
            self.card = json.loads((self.release_dir / "model_card.json").read_text(encoding="utf-8"))
            vocabulary = json.loads((self.release_dir / "vocabulary.json").read_text(encoding="utf-8"))
            model = (self.release_dir / "model.onnx").read_bytes()
        self.tokenizer = CharTokenizer.from_json(vocabulary)
        with storage_errors(self.release_dir):
            self.chat_template = ChatTemplate.of_release(self.release_dir, self.card)
        config = self.card["model_config"]
        self.block_size = int(config["block_size"])
        self.context_after_slide = max(1, self.block_size // 2)
        head_dim = int(config["n_embd"]) // int(config["n_head"])
        self.cache_row_shape = (int(config["n_layer"]), 2, 1, int(config["n_head"]), 0, head_dim)
        options = ort.SessionOptions()
        # Small models decode latency bound: one thread avoids cross-thread hand-offs per op.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = {node.name for node in self.session.get_inputs()}
        if inputs != set(INPUT_NAMES):
            raise ValueError(
                f"{self.release_dir / 'model.onnx'} takes inputs {sorted(inputs)}, not {sorted(INPUT_NAMES)}: it "
                "predates the batched key/value-cache export. Publish a new release with "
                "`python scripts/cli.py run --from 4_deploy --force`."
            )

    @property
    def version(self) -> str:
        """The release version from its model card."""
        return self.card["version"]

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits of the token after `ids` (1-D, cropped to the block size) and the one-row cache that holds them."""
        logits, cache = self.prefill_all(ids[-self.block_size :])
        return logits[-1], cache

    def prefill_all(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits after each of `ids` (1-D, at most a block), [len(ids), vocab], and the one-row cache."""
        context = np.ascontiguousarray(ids, dtype=np.int64)[None, :]
        feeds = {
            INPUT_IDS: context,
            POSITION_IDS: np.arange(context.shape[1], dtype=np.int64)[None, :],
            PAST_KEY_VALUES: np.zeros(self.cache_row_shape, np.float32),
            PAST_MASK: np.zeros((1, 0), dtype=bool),
        }
        logits, cache = self.session.run(None, feeds)
        return logits[0], cache

    def prompt_logits(self, ids: np.ndarray) -> np.ndarray:
        """The logits that predict each of `ids[1:]` from the ids before it, [len(ids) - 1, vocab]: what scoring a
        text needs. Within a block the context is every id before; past it, as in decoding, the context restarts from
        a recent half block, so each id is predicted from between half a block and a full block of text."""
        block, half = self.block_size, self.context_after_slide
        ids = np.asarray(ids, dtype=np.int64)
        chunks, start, scored = [], 0, 0  # `scored`: how many of ids[1:] have their logits
        while scored < len(ids) - 1:
            end = min(start + block, len(ids) - 1)  # the context ids[start:end] predicts ids[start + 1 : end + 1]
            logits, _ = self.prefill_all(ids[start:end])
            chunks.append(logits[scored - start :])
            scored, start = end, max(start + half, end - half) if end - start == block else end
        return np.concatenate(chunks) if chunks else np.zeros((0, self.tokenizer.vocab_size), np.float32)

    def step(
        self, tokens: np.ndarray, positions: np.ndarray, cache: np.ndarray, past_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One new token per row (`tokens`, `positions`: 1-D, one per row) against the rows' cache; the next-token
        logits of each row and the cache grown by one slot."""
        feeds = {
            INPUT_IDS: tokens.astype(np.int64)[:, None],
            POSITION_IDS: positions.astype(np.int64)[:, None],
            PAST_KEY_VALUES: cache,
            PAST_MASK: past_mask,
        }
        logits, cache = self.session.run(None, feeds)
        return logits[:, -1], cache

    def next_token_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits of the token after `ids` (1-D), the context cropped to the block size."""
        return self.prefill(ids)[0]

    def encode_prompt(self, prompt: str) -> tuple[np.ndarray, int]:
        """The prompt's ids and how many of its characters were outside the vocabulary (they become id 0)."""
        if not prompt:
            raise GenerationRequestError("prompt is empty: give at least one character")
        ids = self.tokenizer.encode(prompt).astype(np.int64)
        return ids, int(np.count_nonzero(ids == UNKNOWN_ID))

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int | None = None,
        seed: int | None = None,
        top_p: float = 1.0,
    ) -> Generation:
        """Sample a continuation of `prompt` on its own. Characters outside the vocabulary become the unknown symbol.
        `temperature` 0 is greedy."""
        if temperature < 0 or not math.isfinite(temperature):
            raise GenerationRequestError("temperature must be a finite number >= 0")
        if max_new_tokens < 1:
            raise GenerationRequestError("max_new_tokens must be at least 1")
        ids, unknown = self.encode_prompt(prompt)
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        new_ids = self.decode(ids, max_new_tokens, Sampler(temperature, top_k, rng, top_p))
        seconds = time.perf_counter() - start
        return Generation(self.tokenizer.decode(new_ids), len(new_ids), seconds, unknown)

    def decode(self, ids: np.ndarray, max_new_tokens: int, choose: Callable[[np.ndarray], int]) -> np.ndarray:
        """`max_new_tokens` ids after `ids` (1-D, not empty); `choose` picks each one from the next-token logits."""
        sequence = Sequence(list(map(int, ids)), max_new_tokens, choose)
        batch = DecodeBatch(self)
        batch.add(sequence)
        while batch.rows:
            batch.advance()
        return np.array(sequence.tokens[sequence.prompt_length :], dtype=np.int64)


@dataclass(frozen=True)
class TokenScores:
    """A token's log-probability under the model (temperature 1, the whole vocabulary) and the `top` likeliest ids
    with theirs, most likely first."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_scores(logits: np.ndarray, token: int, top: int) -> TokenScores:
    """`token`'s log-probability given next-token `logits` and the `top` likeliest ids (0 for none)."""
    scores = logits.astype(np.float64)
    shifted = scores - scores.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    best = np.argsort(-logprobs, kind="stable")[:top] if top else ()
    return TokenScores(float(logprobs[token]), tuple((int(i), float(logprobs[i])) for i in best))


@dataclass(eq=False)
class Sequence:
    """One sequence being decoded: its ids so far, how it picks the next one, and whom to tell.

    `on_token(id, scores)` is called with each new id (and its `TokenScores` when `logprobs` is not None: that many
    likeliest ids with it) and returns False to stop early (a stop string, a client that left); `on_finish(sequence)`
    once it is done, whatever the reason; `cancel()` stops it before its next step. With `score_prompt`, the prompt's
    ids after the first get their `prompt_scores` at prefill; `max_new_tokens` 0 then only scores the prompt.
    """

    tokens: list[int]
    max_new_tokens: int
    choose: Callable[[np.ndarray], int]
    on_token: Callable[[int, TokenScores | None], bool] = lambda _token, _scores: True
    on_finish: Callable[[Sequence], None] = lambda _sequence: None
    logprobs: int | None = None
    score_prompt: bool = False
    prompt_scores: list[TokenScores] | None = None
    prompt_length: int = 0
    logits: np.ndarray | None = None
    real_slots: int = 0  # cached slots holding this sequence's tokens
    done: bool = False
    cancelled: bool = False
    finish_reason: str = "length"
    error: str | None = None

    def __post_init__(self) -> None:
        self.prompt_length = self.prompt_length or len(self.tokens)

    @property
    def generated(self) -> int:
        """How many ids this sequence has generated."""
        return len(self.tokens) - self.prompt_length

    def cancel(self) -> None:
        """Stop before the next step (the client went away)."""
        self.cancelled = True

    def fail(self, error: BaseException) -> None:
        """End with `error` (decoding failed); whoever runs it then calls `on_finish`."""
        self.done, self.finish_reason, self.error = True, "error", f"{type(error).__name__}: {error}"


class DecodeBatch:
    """Sequences of one release decoding together: one cache tensor (n_layer, 2, rows, n_head, slots, head_dim) and
    a mask of which slots hold a real token of each row. A row's real slots sit at the right end; shorter rows are
    padded on the left, and slots no row uses any more are trimmed."""

    def __init__(self, generator: OnnxGenerator):
        self.generator = generator
        self.rows: list[Sequence] = []
        layers, two, _, heads, _, head_dim = generator.cache_row_shape
        self.cache = np.zeros((layers, two, 0, heads, 0, head_dim), np.float32)
        self.mask = np.zeros((0, 0), dtype=bool)

    def add(self, sequence: Sequence) -> None:
        """Prefill `sequence`'s prompt and let it join the batch before the next step (a sequence that only scores
        its prompt is done after the prefill instead). A sequence that was `remove`d comes back where it left off:
        its cache is rebuilt from its context, and the logits it held are kept."""
        generator = self.generator
        if sequence.logits is not None:  # back after an eviction
            _, row_cache = generator.prefill_all(np.asarray(sequence.tokens[-sequence.real_slots :], np.int64))
            self._append(sequence, row_cache)
            return
        ids = np.asarray(sequence.tokens, np.int64)
        if sequence.score_prompt:
            top = sequence.logprobs or 0
            logits = generator.prompt_logits(ids)
            sequence.prompt_scores = [token_scores(row, int(t), top) for row, t in zip(logits, ids[1:], strict=True)]
        if sequence.max_new_tokens == 0:
            sequence.done, sequence.finish_reason = True, "length"
            return
        sequence.logits, row_cache = generator.prefill(ids)
        sequence.real_slots = row_cache.shape[4]
        self._append(sequence, row_cache)

    def remove(self, sequence: Sequence) -> None:
        """Take `sequence`'s row out of the batch (it keeps its ids and next-token logits, so `add` resumes it)."""
        keep = np.array([row is not sequence for row in self.rows])
        self.rows = [row for row in self.rows if row is not sequence]
        self.cache, self.mask = self.cache[:, :, keep], self.mask[keep]
        self._trim()

    def _append(self, sequence: Sequence, row_cache: np.ndarray) -> None:
        width, length = self.cache.shape[4], row_cache.shape[4]
        if length > width:  # widen every row on the left with masked slots
            self.cache = _pad_slots(self.cache, length - width)
            self.mask = np.pad(self.mask, [(0, 0), (length - width, 0)])
            width = length
        self.cache = np.concatenate([self.cache, _pad_slots(row_cache, width - length)], axis=2)
        self.mask = np.concatenate([self.mask, (np.arange(width) >= width - length)[None, :]], axis=0)
        self.rows.append(sequence)

    def _replace_row(self, index: int, row_cache: np.ndarray) -> None:
        width, length = self.cache.shape[4], row_cache.shape[4]
        self.cache[:, :, index] = 0.0
        self.cache[:, :, index, :, width - length :] = row_cache[:, :, 0]
        self.mask[index] = np.arange(width) >= width - length

    def _emit(self, sequence: Sequence, token: int | None = None) -> None:
        token = sequence.choose(sequence.logits) if token is None else token
        if token == END:  # the grammar's text is complete (or, at a dead end, cannot go on)
            sequence.done = True
            sequence.finish_reason = "length" if getattr(sequence.choose, "dead_end", False) else "stop"
            return
        sequence.tokens.append(token)
        scores = None if sequence.logprobs is None else token_scores(sequence.logits, token, sequence.logprobs)
        if not sequence.on_token(token, scores) or getattr(sequence.choose, "complete", False):
            sequence.done, sequence.finish_reason = True, "stop"
        elif sequence.generated >= sequence.max_new_tokens:
            sequence.done, sequence.finish_reason = True, "length"

    def advance(self) -> list[Sequence]:
        """Each row picks its next id; finished rows leave; the rest run one step together. Returns the rows that
        finished (or were cancelled) in this call."""
        generator = self.generator
        picked = self._sample_batched()
        for index, sequence in enumerate(self.rows):
            if sequence.cancelled:
                sequence.done, sequence.finish_reason = True, "cancelled"
                continue
            self._emit(sequence, picked.get(index))
            while not sequence.done and sequence.real_slots >= generator.block_size:
                # A full block: restart from the latest half block, which includes the id just picked.
                recent = np.asarray(sequence.tokens[-generator.context_after_slide :], np.int64)
                sequence.logits, row_cache = generator.prefill(recent)
                sequence.real_slots = row_cache.shape[4]
                self._replace_row(index, row_cache)
                self._emit(sequence)
        finished = [s for s in self.rows if s.done]
        if finished:
            keep = np.array([not s.done for s in self.rows])
            self.rows = [s for s in self.rows if not s.done]
            self.cache, self.mask = self.cache[:, :, keep], self.mask[keep]
        if self.rows:
            self._trim()
            tokens = np.array([s.tokens[-1] for s in self.rows])
            positions = np.array([s.real_slots for s in self.rows])
            logits, self.cache = generator.step(tokens, positions, np.ascontiguousarray(self.cache), self.mask)
            self.mask = np.concatenate([self.mask, np.ones((len(self.rows), 1), bool)], axis=1)
            for sequence, row_logits in zip(self.rows, logits, strict=True):
                sequence.logits = row_logits
                sequence.real_slots += 1
        return finished

    def _sample_batched(self) -> dict[int, int]:
        """The next id of every row that samples with a `Sampler`, in one pass ({row index: id}); other rows (a
        custom `choose`) pick their own in `_emit`."""
        rows = [i for i, s in enumerate(self.rows) if isinstance(s.choose, Sampler) and not s.cancelled]
        if not rows:
            return {}
        logits = np.stack([self.rows[i].logits for i in rows])
        return dict(zip(rows, sample_rows(logits, [self.rows[i].choose for i in rows]).tolist(), strict=True))

    def _trim(self) -> None:
        used = self.mask.any(axis=0)
        first = int(np.argmax(used)) if used.any() else self.mask.shape[1]
        if first:
            self.cache, self.mask = self.cache[:, :, :, :, first:], self.mask[:, first:]


def _pad_slots(cache: np.ndarray, count: int) -> np.ndarray:
    return np.pad(cache, [(0, 0)] * 4 + [(count, 0), (0, 0)]) if count else cache
