"""One request's decoding, as the API sees it: the text of each of its choices arriving on the event loop from the
batcher's thread, in one hand-over per decoding step for the whole request; stop strings held back until they cannot
be the start of one; cancellation when the client leaves.

A character model makes one character per token, so a choice's text and its tokens line up one to one: the log-
probabilities of held-back text are held back with it, and those of a stop string are dropped with it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from deploy_code_location.onnx_generator import OnnxGenerator, Sequence, TokenScores
from deploy_code_location.serving.batcher import Batcher


class LoopWaker:
    """Hands what every request got during a decoding step to the event loop in one wake-up per step, instead of
    one per token and choice: each wake-up is a thread switch, which at one request costs more than the step."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ready: dict[int, DecodingJob] = {}

    def mark(self, job: DecodingJob) -> None:
        """`job` has new text or an ended choice (called on the batcher's thread)."""
        with self._lock:
            self._ready[id(job)] = job

    def wake(self) -> None:
        """Tell the marked jobs' event loops (called by the batcher after each step)."""
        with self._lock:
            jobs, self._ready = list(self._ready.values()), {}
        by_loop: dict[int, list[DecodingJob]] = {}
        for job in jobs:
            by_loop.setdefault(id(job.loop), []).append(job)
        for group in by_loop.values():
            try:
                group[0].loop.call_soon_threadsafe(_deliver, group)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
                for job in group:
                    job.cancel()


def _deliver(jobs: list[DecodingJob]) -> None:
    for job in jobs:
        job.ready.set()


class StopMatcher:
    """Finds the first stop string in streamed text. Text that could still be the start of a stop string is held
    back, so what was emitted never has to be taken back; the stop string itself is never emitted (as OpenAI). A
    stop string that ends before `min_length` characters does not count (vLLM's `min_tokens`)."""

    def __init__(self, stops: list[str], min_length: int = 0):
        self.stops, self.min_length = [stop for stop in stops if stop], min_length
        self._held, self._emitted = "", 0

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop string was found."""
        if not self.stops:
            return text, False
        self._held += text
        found = None
        for stop in self.stops:
            at = self._held.find(stop)
            while at >= 0 and self._emitted + at + len(stop) < self.min_length:
                at = self._held.find(stop, at + 1)
            if at >= 0 and (found is None or at < found):
                found = at
        if found is not None:
            emitted, self._held = self._held[:found], ""
            return emitted, True
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if self._held.endswith(stop[:k])), default=0)
        emitted, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        self._emitted += len(emitted)
        return emitted, False

    def flush(self) -> str:
        """What is held back, once generation ended without a stop string."""
        emitted, self._held = self._held, ""
        return emitted


@dataclass
class Piece:
    """New text of one choice, with one `TokenScores` per character when log-probabilities were asked for."""

    text: str
    scores: list[TokenScores] | None = None


class Choice:
    """One choice of a request: its sequence in the batcher, and the text and scores it emitted so far."""

    def __init__(self, job: DecodingJob, index: int, sequence: Sequence, stops: list[str], min_tokens: int = 0):
        self.job, self.index, self.sequence = job, index, sequence
        self.text_parts: list[str] = []
        self.scores: list[TokenScores] = []
        self._matcher = StopMatcher(stops, min_tokens)
        self._held: deque[TokenScores] = deque()  # scores of the characters the matcher holds back
        self._decode = job.generator.tokenizer.decode

    @property
    def text(self) -> str:
        """The text emitted so far (all of it, once the choice ended)."""
        return "".join(self.text_parts)

    @property
    def finish_reason(self) -> str:
        """OpenAI's: "stop" (a stop string, or a grammar's complete text) or "length" (max tokens first)."""
        return "stop" if self.sequence.finish_reason == "stop" else "length"

    def on_token(self, token: int, scores: TokenScores | None) -> bool:  # on the batcher's thread
        self.job.first_token_seconds = self.job.first_token_seconds or time.perf_counter() - self.job.submitted
        if scores is not None:
            self._held.append(scores)
        text, stopped = self._matcher.feed(self._decode([token]))
        if text:
            self._emit(text)
        return not stopped and not self.sequence.cancelled

    def on_finish(self, sequence: Sequence) -> None:  # on the batcher's thread
        if sequence.finish_reason == "length" and (rest := self._matcher.flush()):
            self._emit(rest)
        self.job.pending.append((self.index, None))
        self.job.waker.mark(self.job)

    def _emit(self, text: str) -> None:
        scores = [self._held.popleft() for _ in text] if self._held else None
        self.text_parts.append(text)
        if scores:
            self.scores.extend(scores)
        if self.job.streaming:
            self.job.pending.append((self.index, Piece(text, scores)))
            self.job.waker.mark(self.job)


class DecodingJob:
    """One request's choices decoding in `batcher`. `updates()` yields, once per decoding step, what every choice
    added: `(index, Piece)` for new text and `(index, None)` for a choice that ended. With `streaming` False, only
    the ends are handed over and the text is read from `choices` at the end (`wait()`). A stop string counts only
    once it ends at or past `min_tokens` characters.

    `first_token_seconds` is the time from submission to the first token of any choice.
    """

    def __init__(
        self,
        batcher: Batcher,
        generator: OnnxGenerator,
        waker: LoopWaker,
        prompts: list[tuple[np.ndarray, Callable[[np.ndarray], int]]],
        max_new_tokens: int,
        stops: list[str] | None = None,
        logprobs: int | None = None,
        score_prompt: bool = False,
        streaming: bool = True,
        min_tokens: int = 0,
    ):
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self.pending: deque[tuple[int, Piece | None]] = deque()  # filled on the batcher's thread
        self.batcher, self.generator, self.waker, self.streaming = batcher, generator, waker, streaming
        self.choices: list[Choice] = []
        for index, (ids, choose) in enumerate(prompts):
            sequence = Sequence(list(map(int, ids)), max_new_tokens, choose, logprobs=logprobs)
            sequence.score_prompt = score_prompt
            choice = Choice(self, index, sequence, stops or [], min_tokens)
            sequence.on_token, sequence.on_finish = choice.on_token, choice.on_finish
            self.choices.append(choice)
        self.submitted = time.perf_counter()
        self.first_token_seconds: float | None = None
        self._ended = 0

    def start(self) -> DecodingJob:
        """Queue the sequences (raises `QueueFullError` when the server is saturated)."""
        self.batcher.submit(self.generator, [choice.sequence for choice in self.choices])
        return self

    def cancel(self) -> None:
        """Stop every choice at the next step (the client went away); their rows are freed."""
        for choice in self.choices:
            choice.sequence.cancel()

    @property
    def completion_tokens(self) -> int:
        """Tokens generated by every choice so far."""
        return sum(choice.sequence.generated for choice in self.choices)

    async def updates(self) -> AsyncIterator[list[tuple[int, Piece | None]]]:
        """What the choices added, one list per hand-over, until every choice ended; cancels what is left if the
        consumer stops early. Raises RuntimeError if decoding failed."""
        try:
            while self._ended < len(self.choices):
                await self.ready.wait()
                self.ready.clear()
                items = []
                while self.pending:
                    items.append(item := self.pending.popleft())
                    if item[1] is None:
                        self._raise_if_failed(self.choices[item[0]])
                        self._ended += 1
                yield items
        finally:
            if self._ended < len(self.choices):
                self.cancel()

    async def wait(self) -> list[Choice]:
        """Every choice, once all ended."""
        async for _ in self.updates():
            pass
        return self.choices

    @staticmethod
    def _raise_if_failed(choice: Choice) -> None:
        if choice.sequence.error:
            raise RuntimeError(choice.sequence.error)
