"""Request bodies before the app sees them: at most 64 KiB (the same 413 whether the size is declared or the body
is chunked: the app never reads more than the limit) and UTF-8 (a 400 otherwise: JSON parsers would otherwise guess
UTF-16 or UTF-32 from the first bytes and accept them)."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024


class RequestBody:
    """ASGI middleware: reads the body itself, up to the limit, checks that it is UTF-8, then hands it over; the
    app's later reads (a streaming response waiting for a disconnect) go to the client as before. Errors come in
    the path's shape (OpenAI's under /v1, the server's own elsewhere)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":  # only POST bodies are read
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"request body larger than {self.max_bytes} bytes: content too large"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            drained = await _discard(receive, 16 * self.max_bytes)
            await self._refuse(scope, send, 413, too_large, close=not drained)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                drained = not message.get("more_body", False) or await _discard(receive, 16 * self.max_bytes)
                await self._refuse(scope, send, 413, too_large, close=not drained)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            message = f"the body is not UTF-8 (byte {error.start}): there was an error parsing the body"
            await self._refuse(scope, send, 400, message)
            return
        handed_over = False

        async def replay() -> Message:
            nonlocal handed_over
            if not handed_over:
                handed_over = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, close: bool = False) -> None:
        from deploy_code_location.serving.errors import error_response

        code = "content_too_large" if status == 413 else "invalid_encoding"
        response = error_response(scope["path"], status, message, code=None if status == 413 else code)
        if not scope["path"].startswith("/v1"):
            response = error_response(
                scope["path"], status, message, items=[{"type": code, "loc": ["body"], "msg": message, "input": None}]
            )
        if close:  # the rest of the body is still coming: the connection cannot be reused
            response.headers["connection"] = "close"
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


async def _discard(receive: Receive, limit: int) -> bool:
    """Read and drop the rest of a refused body, up to `limit` bytes and 1 s; whether it all came. (Answering first
    and closing with the body unread would reset the connection, and the client could lose the answer.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while limit > 0:
                message = await receive()
                limit -= len(message.get("body", b""))
                if message["type"] != "http.request":
                    return False
                if not message.get("more_body", False):
                    return True
    return False
