"""Server-sent events for a decoding job, with what a shared server needs: a client that leaves or stops reading gives
its rows back.

`EventStreamResponse` sends one write per decoding step for the whole request (every event of that step), which is
what keeps the HTTP path close to the engine's own rate. A client that disconnects cancels the job at once. A client
that stays connected but stops reading fills the socket; once a write has waited `stall_seconds`, the `StallWatch`
cancels the job (its rows are free at the next step) and drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deploy_code_location.serving.streams import DecodingJob

logger = logging.getLogger(__name__)


class StallWatch:
    """Checks the streams in flight every `stall_seconds / 4` and ends those whose write has waited longer than
    `stall_seconds`."""

    def __init__(self, stall_seconds: float, on_stall: Callable[[], None] = lambda: None):
        self.stall_seconds, self.on_stall = stall_seconds, on_stall
        self._streams: set[EventStreamResponse] = set()
        self._task: asyncio.Task | None = None

    def add(self, stream: EventStreamResponse) -> None:
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def discard(self, stream: EventStreamResponse) -> None:
        self._streams.discard(stream)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._streams:
            await asyncio.sleep(self.stall_seconds / 4)
            now = loop.time()
            for stream in list(self._streams):
                if stream.writing_since is not None and now - stream.writing_since > self.stall_seconds:
                    self._streams.discard(stream)
                    stream.stall(now - stream.writing_since)
                    self.on_stall()


class EventStreamResponse(Response):
    """A response of `text/event-stream` whose body is `chunks` (bytes, each one write), for `job`."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], job: DecodingJob, watch: StallWatch):
        self.chunks, self.job, self.watch = chunks, job, watch
        self.status_code, self.background = 200, None
        self.writing_since: float | None = None
        self._task: asyncio.Task | None = None
        self._stalled = False

    def stall(self, seconds: float) -> None:
        """The client stopped reading: cancel the job and end the response (the connection is dropped)."""
        logger.warning("a client stopped reading for %.1f s: its stream is cancelled and its rows freed", seconds)
        self._stalled = True
        self.job.cancel()
        if self._task is not None:
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        disconnect = loop.create_task(self._cancel_on_disconnect(receive))
        self.watch.add(self)
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in self.chunks:
                self.writing_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.writing_since = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._stalled:
                raise  # shutdown, not ours: let it through
        finally:
            self.watch.discard(self)
            disconnect.cancel()
            self.job.cancel()  # whatever is left: a client that left frees every row it held

    async def _cancel_on_disconnect(self, receive: Receive) -> None:
        with contextlib.suppress(Exception):
            while (await receive())["type"] != "http.disconnect":
                pass
            self.job.cancel()
