"""How a sequence picks its next token: the sampling controls of OpenAI and vLLM, per row, in one NumPy pass for the
whole batch.

`SamplingParams` is what a request asks for (the API's request models turn themselves into one, as vLLM's do);
`Sampler` is one sequence's instance of it, with its own state: a random generator (so that a seeded sequence
samples the same alone or batched), the count of each token it generated (for the penalties), and the grammar
matcher of structured output. `sample_rows` picks one token for every row of a batch at once.

The steps, in vLLM's order: logit bias; penalties (repetition on the prompt and the output, frequency and presence
on the output); the grammar's mask; then temperature, top-k, min-p and top-p. A row that asks for none of the first
three pays nothing for them: the batch takes the plain path unless one of its rows needs more.

A character model has no end-of-text token, so a grammar's end is a token of its own here: once the text so far
satisfies the grammar, the row may end, with the probability that the model gives to every character the grammar
refuses there ("the model would write something else now"); when the grammar allows nothing more, it ends. A
sampled end is `END`, not a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shared_code_location.model.tokenizer import UNKNOWN_ID

if TYPE_CHECKING:
    from deploy_code_location.structured_output import Constraint, Grammar

#: What `sample_rows` returns for a row that ends instead of writing a token (its grammar is complete).
END = -1


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling parameters, as vLLM's `SamplingParams` (the subset this engine serves): choice `i` of
    the request samples with `seed + i`. `stop` strings end a choice (never before `min_tokens` tokens); `logprobs`
    is how many alternatives each token carries (None: no log-probabilities); `score_prompt` scores the prompt's
    tokens too (echo). `constraint` is what the text must match (structured output, see `structured_output`): it is
    compiled against the release's vocabulary before sampling, and each choice gets its own matcher."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None
    n: int = 1
    max_tokens: int = 16
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    score_prompt: bool = False
    constraint: Constraint | None = None

    def sampler(
        self, index: int, prompt_ids: Sequence[int], vocab_size: int, grammar: Grammar | None = None
    ) -> Sampler:
        """The sampler of choice `index` of a prompt (`prompt_ids`, for the repetition penalty), with its own
        random generator and, with `grammar` (the constraint compiled), its own matcher."""
        bias = None
        if self.logit_bias:
            bias = np.zeros(vocab_size, np.float64)
            for token, value in self.logit_bias.items():
                bias[token] = value
        return Sampler(
            self.temperature,
            self.top_k,
            np.random.default_rng(None if self.seed is None else self.seed + index),
            self.top_p,
            min_p=self.min_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            logit_bias=bias,
            min_tokens=self.min_tokens,
            prompt_ids=prompt_ids,
            grammar=None if grammar is None else grammar.matcher(),
        )


class Sampler:
    """How one sequence picks its next id. Called with one row of logits, or through `sample_rows` for a whole batch
    at once (what `DecodeBatch` does: one NumPy pass per step instead of one per row).

    `temperature` 0 is greedy; `top_k` 0 (or -1, or None) keeps every token; `top_p` 1 and `min_p` 0 keep every
    token; penalties 0 (repetition 1) change nothing; `logit_bias` is added to the logits (one value per id);
    `min_tokens` holds a grammar's end back until that many tokens were written; `grammar` is an `LLMatcher`."""

    def __init__(
        self,
        temperature: float,
        top_k: int | None,
        rng: np.random.Generator,
        top_p: float = 1.0,
        *,
        min_p: float = 0.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        logit_bias: np.ndarray | None = None,
        min_tokens: int = 0,
        prompt_ids: Sequence[int] = (),
        grammar=None,
    ):
        self.temperature, self.rng, self.top_p, self.min_p = temperature, rng, top_p, min_p
        self.top_k = top_k if top_k and top_k > 0 else 0
        self.presence, self.frequency, self.repetition = presence_penalty, frequency_penalty, repetition_penalty
        self.logit_bias, self.min_tokens, self.grammar = logit_bias, min_tokens, grammar
        self.penalized = bool(presence_penalty or frequency_penalty or repetition_penalty != 1.0)
        #: Whether any step before temperature applies (bias, penalties, grammar): the batch's plain path otherwise.
        self.steers = self.penalized or logit_bias is not None or grammar is not None
        self._prompt_ids = np.asarray(prompt_ids, dtype=np.int64) if repetition_penalty != 1.0 else None
        self.counts: np.ndarray | None = None  # per id, how often this sequence generated it (penalties only)
        self.seen: np.ndarray | None = None  # per id, whether it is in the prompt or the output (repetition only)
        self.generated = 0
        #: Set once the grammar allows nothing more (the text is complete) or nothing at all (a dead end).
        self.complete = self.dead_end = False

    def __call__(self, logits: np.ndarray) -> int:
        return int(sample_rows(logits[None, :], [self])[0])

    def _state(self, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        if self.counts is None:
            self.counts, self.seen = np.zeros(vocab, np.float64), np.zeros(vocab, bool)
            if self._prompt_ids is not None:
                self.seen[self._prompt_ids[self._prompt_ids < vocab]] = True
        return self.counts, self.seen

    def took(self, token: int) -> None:
        """Record the token this sequence wrote (or `END`)."""
        if token == END:
            return
        self.generated += 1
        if self.counts is not None:
            self.counts[token] += 1
            self.seen[token] = True
        if self.grammar is not None:
            self.grammar.consume_token(token)
            self.complete = self.grammar.is_stopped()


def sample_token(
    logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator, top_p: float = 1.0
) -> int:
    """One id from next-token logits, never the unknown symbol: greedy at temperature 0, else sampled at
    `temperature` among the `top_k` likeliest and the smallest set whose probability reaches `top_p`."""
    return Sampler(temperature, top_k, rng, top_p)(logits)


def sample_rows(logits: np.ndarray, samplers: list[Sampler]) -> np.ndarray:
    """One id per row of `logits` [rows, vocab], row i picked by `samplers[i]`; `END` for a row whose grammar ends.

    Scores are shifted so that the best is 0 before dividing by the temperature: the best id always keeps weight 1,
    so even a temperature such as 5e-324 gives the greedy choice instead of NaN probabilities. Each row draws one
    uniform number from its own generator (inverse-CDF sampling), so a row's id does not depend on the others.
    """
    vocab = logits.shape[1]
    scores = logits.astype(np.float64)
    scores[:, UNKNOWN_ID] = -np.inf  # the unknown symbol is an input placeholder, never an output
    steering = [row for row, s in enumerate(samplers) if s.steers]
    if steering:
        scores = _steer(scores, samplers, steering)
    width = scores.shape[1]
    temperatures = np.array([s.temperature for s in samplers], dtype=np.float64)
    greedy = temperatures == 0
    ids = np.argmax(scores, axis=1)
    if not greedy.all():  # (a greedy row's filters change nothing: its id is the argmax above)
        if any(s.top_k for s in samplers):
            top_k = np.array([s.top_k for s in samplers])
            limited = (top_k > 0) & (top_k < width)
            kth = -np.sort(-scores[limited], axis=1)[np.arange(limited.sum()), top_k[limited] - 1]
            scores[limited] = np.where(scores[limited] < kth[:, None], -np.inf, scores[limited])
        with np.errstate(over="ignore", under="ignore"):
            probabilities = np.exp(
                (scores - scores.max(axis=1, keepdims=True)) / np.where(greedy, 1.0, temperatures)[:, None]
            )
        if any(s.min_p for s in samplers):  # the best id has weight 1: drop those below min_p of it
            min_p = np.array([s.min_p for s in samplers])
            probabilities = np.where(probabilities < min_p[:, None], 0.0, probabilities)
        if any(s.top_p < 1.0 for s in samplers):
            top_p = np.array([s.top_p for s in samplers])
            nucleus = top_p < 1.0
            probabilities[nucleus] = _nucleus(probabilities[nucleus], top_p[nucleus])
        cumulative = np.cumsum(probabilities, axis=1)
        draws = np.array([0.0 if greedy[row] else s.rng.random() for row, s in enumerate(samplers)])
        sampled = np.minimum((cumulative <= (draws * cumulative[:, -1])[:, None]).sum(axis=1), width - 1)
        ids = np.where(greedy, ids, sampled)
    if width > vocab:  # the grammar's end column
        ids = np.where(ids == vocab, END, ids)
    for row in steering:
        samplers[row].took(int(ids[row]))
    return ids


def _steer(scores: np.ndarray, samplers: list[Sampler], steering: list[int]) -> np.ndarray:
    """Logit bias, penalties and grammar masks on the rows that ask for them; with any grammar, one more column:
    the score of ending the text."""
    vocab = scores.shape[1]
    biased = [row for row in steering if samplers[row].logit_bias is not None]
    if biased:
        scores[biased] += np.stack([samplers[row].logit_bias for row in biased])
    penalized = [row for row in steering if samplers[row].penalized]
    if penalized:
        states = [samplers[row]._state(vocab) for row in penalized]
        counts, seen = np.stack([c for c, _ in states]), np.stack([s for _, s in states])
        repetition = np.array([samplers[row].repetition for row in penalized])[:, None]
        frequency = np.array([samplers[row].frequency for row in penalized])[:, None]
        presence = np.array([samplers[row].presence for row in penalized])[:, None]
        rows = scores[penalized]
        # CTRL's repetition penalty (as vLLM and transformers): a seen token's logit is divided by it if positive,
        # multiplied if negative; then OpenAI's frequency and presence penalties on the output's counts.
        repeated = np.where(rows > 0, rows / repetition, rows * repetition)
        rows = np.where(seen, repeated, rows) - frequency * counts - presence * (counts > 0)
        scores[penalized] = rows
    grammars = [row for row in steering if samplers[row].grammar is not None]
    if not grammars:
        return scores
    from deploy_code_location.structured_output import allowed_tokens

    allowed = allowed_tokens([samplers[row].grammar for row in grammars], vocab)  # [rows, vocab + 1]
    widened = np.empty((len(scores), vocab + 1))
    widened[:, :vocab], widened[:, vocab] = scores, -np.inf
    chosen = slice(None) if len(grammars) == len(scores) else np.array(grammars)  # a slice is cheaper when it can
    constrained = scores[chosen]
    characters, can_end = allowed[:, :vocab], allowed[:, vocab]
    # The end's score: the log of the probability mass of every character the grammar refuses here.
    end = np.logaddexp.reduce(np.where(characters, -np.inf, constrained), axis=1)
    only_end = ~characters.any(axis=1)
    held = np.array([samplers[row].min_tokens > samplers[row].generated for row in grammars])
    widened[chosen, :vocab] = np.where(characters, constrained, -np.inf)
    widened[chosen, vocab] = np.where(only_end, 0.0, np.where(can_end & ~held, end, -np.inf))
    for row, dead in zip(grammars, only_end & ~can_end, strict=True):
        # Nothing allowed, not even the end: the grammar needs a character outside the vocabulary. End, incomplete.
        samplers[row].dead_end = bool(dead)
    return widened


def _nucleus(probabilities: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """`probabilities` (rows, not normalised) kept only on the smallest set of ids of each row reaching its `top_p`."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ordered = np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(ordered, axis=1)
    last = (cumulative < (top_p * cumulative[:, -1])[:, None]).sum(axis=1)  # the first index reaching top_p
    keep = np.arange(probabilities.shape[1])[None, :] <= last[:, None]
    kept = np.zeros_like(probabilities)
    np.put_along_axis(kept, order, np.where(keep, ordered, 0.0), axis=1)
    return kept
