"""Continuous batching for the server: one thread runs `DecodeBatch.advance` for every request decoding at the same
moment, so they share one ONNX Runtime call per step. Requests join and leave between steps.

Rows are shared fairly between requests (max-min fairness): a free row goes to the waiting request that holds the
fewest rows, and when none is free, a request holding two or more rows than a waiting one gives one up (its row is
evicted and resumes later where it left off, its cache rebuilt from its context). So one large request (16 prompts
x 8 choices) cannot take every row: a new request gets a row at the next step. The queue is bounded in requests:
past `max_queue` waiting requests, `submit` raises `QueueFullError` (the API answers 503 with Retry-After) instead
of letting latency grow without limit. A cancelled sequence (its client went away) leaves at the next step.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from deploy_code_location.onnx_generator import DecodeBatch, OnnxGenerator, Sequence

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More requests are waiting than the queue holds; retry later."""


@dataclass
class BatcherStats:
    """What the metrics show: sequences waiting, sequences decoding, rows given up to another request so far, and the
    decoding thread's CPU time."""

    queued: int = 0
    active: int = 0
    evictions: int = 0
    cpu_seconds: float = 0.0


@dataclass(eq=False)
class _Request:
    """One request's sequences: those waiting for a row and those holding one."""

    generator: OnnxGenerator
    order: int
    waiting: deque[Sequence]
    rows: list[Sequence] = field(default_factory=list)


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
        self._requests: list[_Request] = []  # every request with a sequence waiting or decoding, oldest first
        self._order = itertools.count()
        self._queued = self._active = self._evictions = 0
        self._cpu_seconds = 0.0
        self._batches: dict[int, DecodeBatch] = {}  # one per release being decoded (a swap leaves the old to finish)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="decode-batcher", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> BatcherStats:
        """Sequences waiting and decoding now."""
        with self._condition:
            return BatcherStats(self._queued, self._active, self._evictions, self._cpu_seconds)

    def submit(self, generator: OnnxGenerator, sequences: list[Sequence]) -> None:
        """Queue one request's `sequences` for decoding with `generator`; `QueueFullError` when the queue is full."""
        with self._condition:
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            waiting = sum(1 for request in self._requests if request.waiting)
            if waiting >= self.max_queue:
                raise QueueFullError(f"{waiting} requests are waiting already; retry later")
            self._requests.append(_Request(generator, next(self._order), deque(sequences)))
            self._queued += len(sequences)
            self._condition.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is decoding, refuse new work, and end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout)

    def _plan(self) -> tuple[list[tuple[_Request, Sequence]], list[tuple[_Request, Sequence]]] | None:
        """Under the lock: the rows to evict and the sequences to admit before the next step (max-min fair); None
        once stopped with nothing left to do."""
        with self._condition:
            while not self._requests:
                if self._stopping:
                    return None
                self._condition.wait()
            evict, admit, free = [], [], self.max_batch - self._active
            while waiting := [r for r in self._requests if r.waiting]:
                taker = min(waiting, key=lambda r: (len(r.rows), r.order))
                if free <= 0:
                    donor = max(self._requests, key=lambda r: (len(r.rows), r.order))
                    if len(donor.rows) <= len(taker.rows) + 1:
                        break
                    evicted = donor.rows.pop()
                    donor.waiting.appendleft(evicted)
                    if (donor, evicted) in admit:  # admitted in this very plan: not in the batch yet
                        admit.remove((donor, evicted))
                    else:
                        evict.append((donor, evicted))
                        self._evictions += 1
                    free += 1
                    continue
                sequence = taker.waiting.popleft()
                taker.rows.append(sequence)
                admit.append((taker, sequence))
                free -= 1
            moved = len(admit) - len(evict)
            self._queued -= moved
            self._active += moved
            return evict, admit

    def _finished(self, request: _Request, sequence: Sequence) -> None:
        with self._condition:
            request.rows.remove(sequence)
            self._active -= 1
            if not request.rows and not request.waiting:
                self._requests.remove(request)
        sequence.on_finish(sequence)

    def _batch(self, generator: OnnxGenerator) -> DecodeBatch:
        return self._batches.setdefault(id(generator), DecodeBatch(generator))

    def _run(self) -> None:
        owners: dict[int, _Request] = {}  # id(sequence) -> its request, for the sequences holding a row
        while (plan := self._plan()) is not None:
            evict, admit = plan
            for request, sequence in evict:
                self._batch(request.generator).remove(sequence)
                owners.pop(id(sequence), None)
            for request, sequence in admit:
                self._admit(request, sequence, owners)
            for key, batch in list(self._batches.items()):
                if batch.rows:
                    self._step(batch, owners)
                else:
                    del self._batches[key]
            self.after_step()
            self._cpu_seconds = time.thread_time()

    def _admit(self, request: _Request, sequence: Sequence, owners: dict[int, _Request]) -> None:
        if sequence.cancelled:
            sequence.finish_reason, sequence.done = "cancelled", True
            self._finished(request, sequence)
            return
        try:
            self._batch(request.generator).add(sequence)
        except Exception as error:  # a broken release must fail its requests, not the thread
            logger.exception("prefill failed")
            sequence.fail(error)
            self._finished(request, sequence)
            return
        if sequence.done:  # it only scored its prompt
            self._finished(request, sequence)
        else:
            owners[id(sequence)] = request

    def _step(self, batch: DecodeBatch, owners: dict[int, _Request]) -> None:
        started, size = time.perf_counter(), len(batch.rows)
        try:
            finished = batch.advance()
        except Exception as error:
            logger.exception("decoding step failed")
            finished, batch.rows = batch.rows, []
            del self._batches[id(batch.generator)]  # its cache is in an unknown state: the next request starts anew
            for sequence in finished:
                sequence.fail(error)
        self.on_step(size)
        for sequence in finished:
            self._finished(owners.pop(id(sequence)), sequence)
        logger.debug("step of %d rows in %.2f ms", size, 1000 * (time.perf_counter() - started))
