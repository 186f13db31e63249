"""Continuous batching for the server: one thread runs `DecodeBatch.advance` for every request decoding at the same
moment, so they share one ONNX Runtime call per step. Requests join and leave between steps.

The queue is bounded: past `max_queue` waiting sequences, `submit` raises `QueueFullError` (the API answers 503)
instead of letting latency grow without limit. A cancelled sequence (its client went away) leaves at the next step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from deploy_code_location.onnx_generator import DecodeBatch, OnnxGenerator, Sequence

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More sequences are waiting than the queue holds; retry later."""


@dataclass
class BatcherStats:
    """What the metrics show: sequences waiting, sequences decoding."""

    queued: int = 0
    active: int = 0


class Batcher:
    """Runs every submitted `Sequence` to its end on one background thread, up to `max_batch` at a time."""

    def __init__(
        self,
        max_batch: int = 64,
        max_queue: int = 256,
        on_step: Callable[[int], None] = lambda _size: None,
        after_step: Callable[[], None] = lambda: None,
    ):
        self.max_batch, self.max_queue = max_batch, max_queue
        self.on_step, self.after_step = on_step, after_step
        self._condition = threading.Condition()
        self._waiting: deque[tuple[OnnxGenerator, Sequence]] = deque()
        self._batches: dict[int, DecodeBatch] = {}  # one per release being decoded (a swap leaves the old to finish)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="decode-batcher", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> BatcherStats:
        """Sequences waiting and decoding now."""
        with self._condition:
            return BatcherStats(len(self._waiting), sum(len(b.rows) for b in self._batches.values()))

    def submit(self, generator: OnnxGenerator, sequence: Sequence) -> None:
        """Queue `sequence` for decoding with `generator`; `QueueFullError` when the queue is full."""
        with self._condition:
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are waiting already; retry later")
            self._waiting.append((generator, sequence))
            self._condition.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is decoding, refuse new work, and end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout)

    def _admit(self) -> list[tuple[OnnxGenerator, Sequence]]:
        with self._condition:
            while not self._waiting and not any(b.rows for b in self._batches.values()):
                if self._stopping:
                    return []
                self._condition.wait()
            room = self.max_batch - sum(len(b.rows) for b in self._batches.values())
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _run(self) -> None:
        while True:
            admitted = self._admit()
            if self._stopping and not admitted and not any(b.rows for b in self._batches.values()):
                return
            for generator, sequence in admitted:
                batch = self._batches.setdefault(id(generator), DecodeBatch(generator))
                try:
                    batch.add(sequence)
                except Exception as error:  # a broken release must fail its requests, not the thread
                    logger.exception("prefill failed")
                    sequence.fail(error)
                    self.after_step()
            for key, batch in list(self._batches.items()):
                if not batch.rows:
                    with self._condition:
                        del self._batches[key]
                    continue
                started = time.perf_counter()
                size = len(batch.rows)
                try:
                    finished = batch.advance()
                except Exception as error:
                    logger.exception("decoding step failed")
                    failed, finished, batch.rows = batch.rows, [], []
                    for sequence in failed:
                        sequence.fail(error)
                    with self._condition:
                        del self._batches[key]
                self.on_step(size)
                for sequence in finished:
                    sequence.on_finish(sequence)
                self.after_step()
                logger.debug("step of %d rows in %.2f ms", size, 1000 * (time.perf_counter() - started))
