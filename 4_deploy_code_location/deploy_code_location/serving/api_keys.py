"""API keys, as vLLM's `--api-key`: with one or more keys set, every route that reaches the model needs
`Authorization: Bearer <key>`; a request without one, or with another, gets a 401 (OpenAI's error shape under `/v1`,
the server's own elsewhere) with `WWW-Authenticate: Bearer`.

Open without a key: the probes and the scrape (`/health`, `/ready`, `/metrics`), the playground page and its icon
(the page itself sends the key it is given), and the API's documentation (`/docs`, `/openapi.json`, its static
files). Everything else is closed, so a route added later is closed too.

A key is compared through its SHA-256 digest with `hmac.compare_digest`, against every configured key (no early
exit), so the time taken says nothing about how much of a key was right, nor which one. Keys are never logged or
echoed in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/", "/favicon.ico", "/favicon.svg", "/health", "/ready", "/metrics", "/docs", "/openapi.json"})
OPEN_PREFIXES = ("/static-offline-docs/",)


def parse_keys(*sources: Iterable[str] | str | None) -> list[str]:
    """The keys of each source (a comma-separated string, as `ML_PIPELINE_API_KEYS` holds them, or a list of
    them), blanks dropped, duplicates once, in order."""
    keys: list[str] = []
    for source in sources:
        if source is None:
            continue
        for key in source.split(",") if isinstance(source, str) else source:
            if key.strip() and key.strip() not in keys:
                keys.append(key.strip())
    return keys


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """ASGI middleware: with `keys`, a request to a closed route needs one of them as a bearer token."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]):
        self.app = app
        self._digests = [_digest(key) for key in keys]

    def allows(self, authorization: bytes | None) -> bool:
        """Whether an `Authorization` header value carries one of the keys."""
        scheme, _, token = (authorization or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        digest, found = _digest(token.strip()), False
        for expected in self._digests:
            found |= hmac.compare_digest(digest, expected)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self._digests
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
            or self.allows(dict(scope["headers"]).get(b"authorization"))
        ):
            await self.app(scope, receive, send)
            return
        from deploy_code_location.serving.errors import error_response

        given = b"authorization" in dict(scope["headers"])
        if given:
            message, code = "the API key is not valid", "invalid_api_key"
            challenge = 'Bearer error="invalid_token", error_description="the API key is not valid"'
        else:
            message, code = "an API key is required: send the header Authorization: Bearer <key>", "missing_api_key"
            challenge = "Bearer"
        response = error_response(path, 401, message, code=code)
        response.headers["WWW-Authenticate"] = challenge
        await response(scope, receive, send)
