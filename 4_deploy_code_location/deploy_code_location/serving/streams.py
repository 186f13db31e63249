"""One request's decoding, as the API sees it: text pieces arriving on the event loop from the batcher's thread,
stop strings held back until they cannot be the start of one, and cancellation when the client leaves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import numpy as np

from deploy_code_location.onnx_generator import OnnxGenerator, Sequence
from deploy_code_location.serving.batcher import Batcher

_END = object()


class LoopWaker:
    """Hands the text of every stream that got some during a decoding step to the event loop in one wake-up per
    step, instead of one per token and stream: each wake-up is a thread switch, which at one request costs more than
    the step itself."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ready: dict[int, TokenStream] = {}

    def mark(self, stream: TokenStream) -> None:
        """`stream` has new text or has ended (called on the batcher's thread)."""
        with self._lock:
            self._ready[id(stream)] = stream

    def wake(self) -> None:
        """Deliver what the marked streams have (called by the batcher after each step)."""
        with self._lock:
            streams, self._ready = list(self._ready.values()), {}
        by_loop: dict[int, list[TokenStream]] = {}
        for stream in streams:
            by_loop.setdefault(id(stream.loop), []).append(stream)
        for group in by_loop.values():
            try:
                group[0].loop.call_soon_threadsafe(_deliver, group)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
                for stream in group:
                    stream.sequence.cancel()


def _deliver(streams: list[TokenStream]) -> None:
    for stream in streams:
        while stream.pieces:
            stream.queue.put_nowait(stream.pieces.popleft())


class StopMatcher:
    """Finds the first stop string in streamed text. Text that could still be the start of a stop string is held
    back, so what was emitted never has to be taken back; the stop string itself is never emitted (as OpenAI)."""

    def __init__(self, stops: list[str]):
        self.stops = [stop for stop in stops if stop]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop string was found."""
        self._held += text
        for stop in self.stops:
            at = self._held.find(stop)
            if at >= 0:
                emitted, self._held = self._held[:at], ""
                return emitted, True
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if self._held.endswith(stop[:k])), default=0)
        emitted, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return emitted, False

    def flush(self) -> str:
        """What is held back, once generation ended without a stop string."""
        emitted, self._held = self._held, ""
        return emitted


class TokenStream:
    """Decodes one sequence in `batcher` and yields its text as it is made (async iteration; with `streaming`
    False, all at the end).

    `finish_reason` is "stop" (a stop string), "length" (max tokens) or "error"; `completion_tokens` counts every
    id generated; `first_token_seconds` is the time from submission to the first id.
    """

    def __init__(
        self,
        batcher: Batcher,
        generator: OnnxGenerator,
        prompt_ids: np.ndarray,
        max_new_tokens: int,
        choose: Callable[[np.ndarray], int],
        waker: LoopWaker,
        stops: list[str] | None = None,
        streaming: bool = True,
    ):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pieces: deque = deque()  # filled on the batcher's thread, moved to `queue` on the loop's
        self._waker, self._streaming = waker, streaming
        self._matcher = StopMatcher(stops or [])
        self._decode = generator.tokenizer.decode
        self._batcher, self._generator = batcher, generator
        self.sequence = Sequence(
            list(map(int, prompt_ids)), max_new_tokens, choose, on_token=self._on_token, on_finish=self._on_finish
        )
        self.submitted = time.perf_counter()
        self.first_token_seconds: float | None = None

    def start(self) -> TokenStream:
        """Queue the sequence (raises `QueueFullError` when the server is saturated)."""
        self._batcher.submit(self._generator, self.sequence)
        return self

    def _put(self, item: object) -> None:
        self.pieces.append(item)
        if self._streaming or item is _END:  # a whole answer needs waking only once, at its end
            self._waker.mark(self)

    def _on_token(self, token: int) -> bool:  # on the batcher's thread
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self.submitted
        text, stopped = self._matcher.feed(self._decode([token]))
        if text:
            self._put(text)
        return not stopped and not self.sequence.cancelled

    def _on_finish(self, sequence: Sequence) -> None:  # on the batcher's thread
        if sequence.finish_reason == "length":
            rest = self._matcher.flush()
            if rest:
                self._put(rest)
        self._put(_END)

    @property
    def finish_reason(self) -> str:
        return self.sequence.finish_reason

    @property
    def completion_tokens(self) -> int:
        return self.sequence.generated

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            while (item := await self.queue.get()) is not _END:
                yield item
        finally:
            if not self.sequence.done:  # the client went away mid-stream: free the slot at the next step
                self.sequence.cancel()
        if self.sequence.error:
            raise RuntimeError(self.sequence.error)

    async def text(self) -> str:
        """The whole completion."""
        return "".join([piece async for piece in self])
