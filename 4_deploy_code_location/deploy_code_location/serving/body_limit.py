"""A request body limit that answers the same 413 whether the body's size is declared (Content-Length) or not
(chunked): the app never reads more than the limit."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024


class BodySizeLimit:
    """ASGI middleware: 413 with the error shape of the path (OpenAI's under /v1, the server's own elsewhere).

    It reads the body itself, up to the limit, before the app sees the request, then hands it over; the app's later
    reads (a streaming response waiting for a disconnect) go to the client as before.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            more = message.get("more_body", False)
        handed_over = False

        async def replay() -> Message:
            nonlocal handed_over
            if not handed_over:
                handed_over = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes: content too large"
        if scope["path"].startswith("/v1/"):
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        else:
            body = {"detail": [{"type": "content_too_large", "loc": ["body"], "msg": message, "input": None}]}
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
