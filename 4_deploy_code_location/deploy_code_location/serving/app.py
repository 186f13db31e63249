"""The FastAPI application, assembled from one router per concern (`serving/routes/`):

- `openai_completions`, `openai_chat`: OpenAI's API under `/v1` (completions with `logprobs` and `echo`, chat
  completions on the release's chat template, models), streaming with server-sent events;
- `generate`: `POST /generate`, the server's own shape; `tokens`: vLLM's `/tokenize` and `/detokenize`;
- `operations`: `/health` (live), `/ready` (a release is loaded), `/metrics` (Prometheus);
- `playground`: `GET /`, a page to try the model; and `/docs` (Swagger UI, served from the package: it works
  offline).

Every request decodes in one shared `Batcher`, so concurrent requests share each ONNX Runtime step.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from deploy_code_location.serving.api_models import MAX_SEED
from deploy_code_location.serving.batcher import Batcher
from deploy_code_location.serving.errors import install_error_handlers
from deploy_code_location.serving.event_stream import StallWatch
from deploy_code_location.serving.metrics import RequestCounter, ServerMetrics
from deploy_code_location.serving.openai_models import ChatCompletionChunk, CompletionChunk
from deploy_code_location.serving.release_watcher import ReleaseWatcher
from deploy_code_location.serving.request_body import MAX_BODY_BYTES, RequestBody
from deploy_code_location.serving.routes import (
    generate,
    openai_chat,
    openai_completions,
    operations,
    playground,
    tokens,
)
from deploy_code_location.serving.state import ServerState
from deploy_code_location.serving.streams import LoopWaker

DEFAULT_MODEL_NAME = "char-transformer"
DESCRIPTION = (
    "Text generation with the latest good release, on ONNX Runtime; OpenAI-compatible under `/v1` (errors there in "
    "OpenAI's shape, elsewhere as `detail`). Bodies are UTF-8 JSON of at most 64 KiB."
)


def create_app(
    output_dir: Path,
    release: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch: int = 64,
    max_queue: int = 256,
    stall_seconds: float = 10.0,
) -> FastAPI:
    """The app serving `release` (a version or folder) from `output_dir`, or following its latest good release.

    At most `max_batch` sequences decode together and `max_queue` requests wait (more get 503); a stream whose
    client has not read for `stall_seconds` is cancelled."""
    metrics = ServerMetrics()
    waker = LoopWaker()
    batcher = Batcher(
        max_batch=max_batch, max_queue=max_queue, on_step=metrics.batch_size.observe, after_step=waker.wake
    )
    metrics.track_batcher(lambda: batcher.stats)
    state = ServerState(
        ReleaseWatcher(output_dir, release),
        batcher,
        waker,
        metrics,
        StallWatch(stall_seconds, metrics.stalled.inc),
        model_name,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.stop()  # uvicorn has drained the requests in flight by now

    app = FastAPIOffline(lifespan=lifespan, title="Character-level transformer", description=DESCRIPTION, version="3.0")
    app.state.server = state
    app.state.watcher, app.state.batcher = state.watcher, batcher  # for `__main__` and the tests
    for module in (openai_completions, openai_chat, generate, tokens, operations, playground):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(RequestBody, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestCounter, metrics=metrics)  # outermost: counts the 413s and 400s of RequestBody too
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, made to say what the server does: the stream chunks' schemas, and no 422 where the
    server answers bad input with a 400 (OpenAI's API) instead."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        _, chunks = models_json_schema(
            [(CompletionChunk, "serialization"), (ChatCompletionChunk, "serialization")],
            ref_template="#/components/schemas/{model}",
        )
        schemas.update(chunks.get("$defs", {}))
        for path, operations in document["paths"].items():
            for operation in operations.values():
                if path.startswith("/v1"):
                    operation["responses"].pop("422", None)
        if "HTTPValidationError" not in str(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        _exact_bounds(document)
        app.openapi_schema = document
    return app.openapi_schema


def _exact_bounds(node) -> None:
    """Integer bounds as exact integers: FastAPI's OpenAPI model holds `minimum` and `maximum` as floats, which
    turns the seed's 2**63 - 1 into 9.223372036854776e+18 (2**63, a seed the server refuses)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum"):
                if isinstance(node.get(key), float):
                    node[key] = MAX_SEED if node[key] == float(MAX_SEED) else int(node[key])
        for value in node.values():
            _exact_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_bounds(value)
