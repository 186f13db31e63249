"""Every error the server answers, in the shape of its path: OpenAI's `{"error": {...}}` under `/v1`, the server's
own `{"detail": [...]}` elsewhere; and the responses each route documents, so that the OpenAPI document lists exactly
the statuses a path can send."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from deploy_code_location.serving.api_models import ErrorResponse
from deploy_code_location.serving.openai_models import REFUSED, REMOVED_GUIDED, InvalidRequest, OpenAIError

#: Seconds a 503 asks the client to wait: a full queue drains in about a second; a release takes longer to appear.
RETRY_AFTER = {"overloaded": 1, "not_ready": 5}
_RETRY_HEADER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_AUTH_HEADER = {
    "WWW-Authenticate": {"description": "`Bearer`: send `Authorization: Bearer <key>`", "schema": {"type": "string"}}
}
_DESCRIPTIONS = {
    400: "Bad request: a parameter (named in the error), a body that is not UTF-8 JSON",
    401: "No API key, or a wrong one (only when the server was started with API keys): see WWW-Authenticate",
    404: "No such model",
    413: "Body larger than 64 KiB",
    422: "Invalid request: what and where in `detail`",
    500: "Internal error (a broken release)",
    503: "Not ready (no release yet) or overloaded (the queue is full): see Retry-After",
}


def documented(statuses: tuple[int, ...], model: type = ErrorResponse) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer `statuses` with errors of `model`."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": model, "description": _DESCRIPTIONS[status]}
        if status == 503:
            responses[status]["headers"] = _RETRY_HEADER
        if status == 401:
            responses[status]["headers"] = _AUTH_HEADER
    return responses


def openai_documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`documented` in OpenAI's error shape; every `/v1` route can also answer 500."""
    return documented(tuple(sorted({*statuses, 500})), OpenAIError)


class ApiError(Exception):
    """An error response: status, message, and for OpenAI's shape the parameter and code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as strings and lone surrogates escaped: what JSON can carry."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float) else str(value)


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object: `invalid_request_error` for every 4xx, `server_error` for a 5xx."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": json_safe(message), "type": kind, "param": param, "code": code}}


def error_response(path: str, status: int, message: str, param=None, code=None, items=None) -> JSONResponse:
    """The error in the shape of `path`; a 503 says when to retry."""
    headers = {"Retry-After": str(RETRY_AFTER.get(code, 1))} if status == 503 else None
    if path.startswith("/v1/") or path == "/v1":
        return JSONResponse(openai_error_body(status, message, param, code), status_code=status, headers=headers)
    items = items or [{"type": code or "error", "loc": ["body", param] if param else [], "msg": message}]
    return JSONResponse({"detail": json_safe(items)}, status_code=status, headers=headers)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    items = [
        {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": e.get("input")} for e in error.errors()
    ]
    if not request.url.path.startswith("/v1/"):
        return error_response(request.url.path, 422, "", items=items)
    first = items[0]
    if first["type"] == "json_invalid":  # loc holds a character offset, not a parameter
        position = first["loc"][1] if len(first["loc"]) > 1 else "?"
        message = f"the body is not valid JSON ({first['msg']} at character {position})"
        return error_response(request.url.path, 400, message, code="invalid_json")
    path = [str(part) for part in first["loc"][1:]]
    param = path[0] if path else None
    if first["type"] == "extra_forbidden" and param in REMOVED_GUIDED:
        code = "unrecognized_parameter"
        message = f"{param} was removed from vLLM's API (in 0.12); use {REMOVED_GUIDED[param]}"
    elif first["type"] == "extra_forbidden":
        code, message = "unrecognized_parameter", f"{param} is not a parameter of this endpoint"
    elif param in REFUSED:
        code, message = "unsupported_parameter", f"{param} is not supported by this server; leave it out"
    else:
        code, message = "invalid_value", "; ".join(_located(item) for item in items)
    return error_response(request.url.path, 400, message, param=param, code=code)


def _located(item: dict) -> str:
    where = ".".join(str(part) for part in item["loc"][1:] if not str(part).startswith(("function-", "list[")))
    return f"{where}: {item['msg']}" if where else item["msg"]


def _methods(request: Request) -> list[str]:
    """The methods some route of the app answers on the request's path (each tried as the router would)."""
    routes = request.app.router.routes
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors, Starlette's own errors (404, 405), `ApiError` and `InvalidRequest` (fields that do
    not go together) in the path's shape."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        response = error_response(request.url.path, error.status_code, message.get(error.status_code, error.detail))
        if error.headers:
            response.headers.update(error.headers)
        if error.status_code == 405:  # every method of the path, not only those of the route that answered
            response.headers["Allow"] = ", ".join(_methods(request))
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request.url.path, error.status, error.message, error.param, error.code)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
        return error_response(request.url.path, 400, str(error), error.param, error.code)
