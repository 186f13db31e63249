"""The FastAPI application.

- `POST /v1/completions`, `GET /v1/models`: OpenAI's completions API (streaming with server-sent events), so that the
  `openai` client and the tools built on it work unchanged.
- `POST /generate`: the server's own shape.
- `GET /`: a playground page; `GET /health` (live), `GET /ready` (a model is loaded); `GET /metrics` (Prometheus);
  `GET /docs` (Swagger UI, served from the package: it works offline).

Every request decodes in one shared `Batcher`, so concurrent requests share each ONNX Runtime step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from deploy_code_location.onnx_generator import sample_token
from deploy_code_location.release_store import ReleaseNotFoundError
from deploy_code_location.serving.api_models import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
    OpenAIError,
    Usage,
)
from deploy_code_location.serving.batcher import Batcher, QueueFullError
from deploy_code_location.serving.body_limit import MAX_BODY_BYTES, BodySizeLimit
from deploy_code_location.serving.release_watcher import ReleaseWatcher
from deploy_code_location.serving.streams import LoopWaker, TokenStream

DEFAULT_MODEL_NAME = "char-transformer"
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422, 500, 503)}
_OPENAI_ERRORS = {status: {"model": OpenAIError} for status in (400, 404, 413, 500, 503)}
_OPENAI_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}


class ApiError(Exception):
    """An error response: status, message, and for OpenAI's shape the parameter and code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _json_safe(value: Any) -> Any:
    """`value` with non-finite floats as strings and lone surrogates escaped: what JSON can carry."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float) else str(value)


def _error_response(request: Request, status: int, items: list[dict], param: str | None = None, code=None):
    if request.url.path.startswith("/v1/"):
        message = "; ".join(f"{'.'.join(map(str, i['loc'][1:])) or 'body'}: {i['msg']}" for i in items)
        body = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"), "param": param}}
        body["error"]["code"] = code
        return JSONResponse(_json_safe(body), status_code=status)
    return JSONResponse({"detail": _json_safe(items)}, status_code=status)


def create_app(
    output_dir: Path,
    release: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch: int = 64,
    max_queue: int = 256,
) -> FastAPI:
    """The app serving `release` (a version or folder) from `output_dir`, or following its latest good release."""
    watcher = ReleaseWatcher(output_dir, release)
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests by path and status code", ["path", "status"], registry=registry)
    generate_requests = Counter("generate_requests", "Requests to /generate by status", ["status"], registry=registry)
    latency = Histogram(
        "generate_latency_seconds",
        "Latency of successful generation requests, first byte to last token",
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    first_token = Histogram(
        "time_to_first_token_seconds",
        "From a request's arrival in the queue to its first token",
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    batch_size = Histogram(
        "decode_batch_size",
        "Sequences sharing one decoding step",
        registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    )
    tokens = Counter("generated_tokens", "Tokens generated", registry=registry)
    waker = LoopWaker()
    batcher = Batcher(max_batch=max_batch, max_queue=max_queue, on_step=batch_size.observe, after_step=waker.wake)
    Gauge("queue_depth", "Sequences waiting to decode", registry=registry).set_function(lambda: batcher.stats.queued)
    Gauge("active_sequences", "Sequences decoding", registry=registry).set_function(lambda: batcher.stats.active)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.stop()  # uvicorn has drained the requests in flight by now

    app = FastAPIOffline(
        lifespan=lifespan,
        title="Character-level transformer",
        description="Text generation with the latest good release, on ONNX Runtime; OpenAI-compatible under /v1.",
        version="2.0",
    )
    app.state.watcher, app.state.batcher = watcher, batcher
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:  # counted, then answered in the documented shape instead of a bare 500
            response = _error_response(request, 500, [{"type": "internal", "loc": [], "msg": "internal error"}])
        requests.labels(path=request.url.path, status=str(response.status_code)).inc()
        if request.url.path == "/generate":
            generate_requests.labels(status=str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        items = [
            {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": e.get("input")} for e in error.errors()
        ]
        if request.url.path.startswith("/v1/"):
            first = items[0]["loc"][1:] if items and len(items[0]["loc"]) > 1 else []
            param = str(first[0]) if first else None
            code = "unrecognized_parameter" if items and items[0]["type"] == "extra_forbidden" else "invalid_value"
            return _error_response(request, 400, items, param=param, code=code)
        return _error_response(request, 422, items)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's own: 400 for a body that is not UTF-8, 404, 405.
        return _error_response(request, error.status_code, [{"type": "http_error", "loc": [], "msg": error.detail}])

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        loc = ["body", error.param] if error.param else []
        items = [{"type": error.code or "error", "loc": loc, "msg": error.message}]
        return _error_response(request, error.status, items, param=error.param, code=error.code)

    def generator_or_503():
        try:
            return watcher.current()
        except ReleaseNotFoundError as error:
            raise ApiError(503, str(error), code="not_ready") from error

    def start(stream: TokenStream) -> TokenStream:
        try:
            return stream.start()
        except QueueFullError as error:
            raise ApiError(503, f"server overloaded: {error}", code="overloaded") from error

    @app.post("/generate", response_model=GenerateResponse, responses=_ERRORS)
    async def generate(body: GenerateRequest) -> GenerateResponse:
        """Sample up to `max_new_tokens` characters after `prompt` (context cropped to the model's block size)."""
        generator = generator_or_503()
        if body.unknown_characters == "reject":
            missing = sorted({ch for ch in body.prompt if ch not in generator.tokenizer.symbols[1:]})
            if missing:
                message = f"prompt has characters outside the vocabulary: {''.join(missing)!r}"
                raise ApiError(422, message, param="prompt", code="value_error")
        ids, unknown = generator.encode_prompt(body.prompt)
        rng = np.random.default_rng(body.seed)
        temperature, top_k = body.temperature, body.top_k
        choose = lambda x: sample_token(x, temperature, top_k, rng)  # noqa: E731
        stream = start(TokenStream(batcher, generator, ids, body.max_new_tokens, choose, waker, streaming=False))
        started = time.perf_counter()
        text = await stream.text()
        seconds = time.perf_counter() - started
        latency.observe(seconds)
        tokens.inc(stream.completion_tokens)
        first_token.observe(stream.first_token_seconds or seconds)
        return GenerateResponse(
            text=text,
            generated_tokens=stream.completion_tokens,
            latency_ms=1000 * seconds,
            ms_per_token=1000 * seconds / max(1, stream.completion_tokens),
            unknown_characters=unknown,
            release=generator.version,
        )

    def model_card() -> ModelCard:
        generator = generator_or_503()
        created_at = generator.card.get("created_at")  # the release's, from its model card
        created = int(dt.datetime.fromisoformat(created_at).timestamp()) if created_at else 0
        return ModelCard(id=model_name, created=created, owned_by="dagster-ml-pipeline", release=generator.version)

    @app.get("/v1/models", response_model=ModelList, responses=_OPENAI_ERRORS)
    def list_models() -> ModelList:
        """The one model served (its id stays the same across releases; `release` says which one)."""
        return ModelList(data=[model_card()])

    @app.post(
        "/v1/completions",
        response_model=Completion,
        responses=_OPENAI_ERRORS
        | {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "See below."}},
    )
    async def completions(body: CompletionRequest, request: Request):
        """OpenAI's completions. With `stream: true`, server-sent events: one `Completion` chunk per token (each
        choice holds its new text), then one with `finish_reason`, then `data: [DONE]`."""
        if parameter := body.unsupported():
            message = f"{parameter} is not supported by this server; leave it out"
            raise ApiError(400, message, param=parameter, code="unsupported_parameter")
        generator = generator_or_503()
        if body.model not in (model_name, generator.version):
            raise ApiError(404, f"model {body.model!r} does not exist; this server has {model_name!r}", "model",
                           "model_not_found")  # fmt: skip
        n, stops = body.n or 1, body.stops
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        streams, prompt_tokens = [], 0
        for prompt in body.prompts:
            ids, _ = generator.encode_prompt(prompt)
            prompt_tokens += len(ids)
            for choice in range(n):
                rng = np.random.default_rng(None if body.seed is None else body.seed + choice)
                choose = lambda x, rng=rng: sample_token(x, temperature, None, rng, top_p)  # noqa: E731
                streams.append(
                    TokenStream(batcher, generator, ids, body.max_tokens or 16, choose, waker, stops, bool(body.stream))
                )
        for stream in streams:
            start(stream)
        header = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        header["system_fingerprint"] = generator.version

        def usage() -> Usage:
            completion = sum(s.completion_tokens for s in streams)
            return Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion
            )

        def finished(stream: TokenStream) -> None:
            tokens.inc(stream.completion_tokens)
            if stream.first_token_seconds is not None:
                first_token.observe(stream.first_token_seconds)

        if not body.stream:
            started = time.perf_counter()
            texts = [await stream.text() for stream in streams]
            latency.observe(time.perf_counter() - started)
            for stream in streams:
                finished(stream)
            choices = [
                CompletionChoice(text=text, index=i, finish_reason=_finish(stream))
                for i, (text, stream) in enumerate(zip(texts, streams, strict=True))
            ]
            return Completion(**header, choices=choices, usage=usage())

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[str]:
            started = time.perf_counter()
            try:
                for index, stream in enumerate(streams):
                    async for piece in stream:
                        choice = CompletionChoice(text=piece, index=index, finish_reason=None)
                        yield _event(Completion(**header, choices=[choice]))
                    finished(stream)
                    last = CompletionChoice(text="", index=index, finish_reason=_finish(stream))
                    yield _event(Completion(**header, choices=[last]))
                if include_usage:
                    yield _event(Completion(**header, choices=[], usage=usage()))
                latency.observe(time.perf_counter() - started)
                yield "data: [DONE]\n\n"
            finally:
                for stream in streams:  # a client that left frees every slot it held
                    if not stream.sequence.done:
                        stream.sequence.cancel()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @app.get("/health")
    def health() -> dict:
        """Liveness: the process answers. (Readiness is `/ready`.)"""
        return {"status": "ok", "release": watcher.version}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    def ready() -> dict:
        """Ready when a model is loaded: the release, its sha256 and shape; 503 before the first release."""
        generator = generator_or_503()
        return {
            "ready": True,
            "release": generator.version,
            "model_sha256": generator.card["model_sha256"],
            "block_size": generator.block_size,
            "vocab_size": generator.tokenizer.vocab_size,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Requests by path and status, latency, time to first token, batch sizes, queue depth, tokens."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    playground = resources.files("deploy_code_location.serving").joinpath("playground.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(playground.replace("{{MODEL}}", json.dumps(model_name)))

    return app


def _finish(stream: TokenStream) -> str:
    return "stop" if stream.finish_reason == "stop" else "length"


def _event(chunk: Completion) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"
