"""The FastAPI application, assembled from one router per concern (`serving/routes/`):

- `openai_completions`, `openai_chat`: OpenAI's API under `/v1` (completions with `logprobs` and `echo`, chat
  completions on the release's chat template, models), streaming with server-sent events;
- `generate`: `POST /generate`, the server's own shape; `tokens`: vLLM's `/tokenize`, `/detokenize` and
  `/tokenizer_info`;
- `operations`: `/health` (live), `/ready` (a release is loaded), `/metrics` (Prometheus);
- `playground`: `GET /`, a page to try the model; and `/docs` (Swagger UI, served from the package: it works
  offline).

Every request decodes in one shared `Batcher`, so concurrent requests share each ONNX Runtime step. With API keys,
`ApiKeys` closes every route but the probes, the metrics, the playground page and the documentation.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from deploy_code_location.serving.api_keys import ApiKeys
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
    api_keys: Iterable[str] = (),
) -> FastAPI:
    """The app serving `release` (a version or folder) from `output_dir`, or following its latest good release.

    At most `max_batch` sequences decode together and `max_queue` requests wait (more get 503); a stream whose
    client has not read for `stall_seconds` is cancelled. With `api_keys`, the model's routes need one of them
    (`Authorization: Bearer <key>`)."""
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
    app.add_middleware(ApiKeys, keys=list(api_keys))  # inside RequestBody: a refused body is read before the 401
    app.add_middleware(RequestBody, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestCounter, metrics=metrics)  # outermost: counts the 413s and 400s of RequestBody too
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """The document of the release served now (`_release_bounds`), or without a release, the general one."""
    document = _general_openapi(app)
    try:
        generator = app.state.server.watcher.current()
        vocabulary = generator.tokenizer.symbols
    except Exception:  # no release yet, or a broken one: the document of every release
        return document
    key = (generator.version, vocabulary)
    if getattr(app.state, "openapi_release", (None,))[0] != key:
        app.state.openapi_release = (key, _release_bounds(document, vocabulary))
    return app.state.openapi_release[1]


def _release_bounds(document: dict, vocabulary: tuple[str, ...]) -> dict:
    """`document` with what depends on the served release's vocabulary as JSON Schema says it: token ids below its
    size (`/detokenize`'s tokens, `logit_bias`'s keys) and, for `/generate` with `unknown_characters: reject`, a
    prompt of its characters only."""
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    schemas["DetokenizeRequest"]["properties"]["tokens"]["items"]["maximum"] = len(vocabulary) - 1
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        for option in schemas[name]["properties"]["logit_bias"].get("anyOf", []):
            if option.get("type") == "object":
                option["propertyNames"] = {"enum": [str(token) for token in range(len(vocabulary))]}
    characters = "".join(_escaped(ch) for ch in vocabulary[1:] if ord(ch) <= 0xFFFF)
    astral = "".join(f"|{_escaped(ch)}" for ch in vocabulary[1:] if ord(ch) > 0xFFFF)
    schemas["GenerateRequest"].setdefault("allOf", []).append(
        {
            "if": {"required": ["unknown_characters"], "properties": {"unknown_characters": {"const": "reject"}}},
            "then": {"properties": {"prompt": {"pattern": f"^(?:[{characters}]{astral})*$"}}},
        }
    )
    return document


def _escaped(character: str) -> str:
    """`character` as an ECMA-262 regex escape (JSON Schema's dialect): `\\uXXXX`, a surrogate pair past U+FFFF."""
    code = ord(character)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def _general_openapi(app: FastAPI) -> dict:
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
        _closed_keys(document)
        app.openapi_schema = document
    return app.openapi_schema


def _closed_keys(node) -> None:
    """Objects whose keys follow a pattern (`logit_bias`) as `propertyNames`: pydantic writes `patternProperties`,
    which leaves every other key allowed, where the server refuses them."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
            ((pattern, values),) = node.pop("patternProperties").items()
            node["propertyNames"], node["additionalProperties"] = {"pattern": pattern}, values
        for value in node.values():
            _closed_keys(value)
    elif isinstance(node, list):
        for value in node:
            _closed_keys(value)


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
