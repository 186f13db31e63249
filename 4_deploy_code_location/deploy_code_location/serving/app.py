"""The FastAPI application: POST /generate, GET /health, GET /metrics (Prometheus), /docs (OpenAPI)."""

import time
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from deploy_code_location.onnx_generator import GenerationRequestError
from deploy_code_location.serving.release_watcher import ReleaseWatcher

MAX_NEW_TOKENS = 1000
MAX_PROMPT_CHARACTERS = 4000
MAX_BODY_BYTES = 64 * 1024


class GenerateRequest(BaseModel):
    """A generation request. Characters outside the model's vocabulary follow `unknown_characters`: `replace`
    (the default) maps each to the unknown symbol U+FFFD, which the model has never seen; `reject` answers 422."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS, examples=["ROMEO:\n"])
    max_new_tokens: int = Field(default=100, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.8, gt=0.0, le=10.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    unknown_characters: Literal["replace", "reject"] = "replace"


class GenerateResponse(BaseModel):
    """Generated text and how long it took."""

    text: str
    generated_tokens: int
    latency_ms: float
    ms_per_token: float
    unknown_characters: int
    release: str


def create_app(output_dir: Path, release: str | None = None) -> FastAPI:
    """The app serving `release` (a version or folder) from `output_dir`, or following its latest good release."""
    watcher = ReleaseWatcher(output_dir, release)
    registry = CollectorRegistry()
    requests = Counter("generate_requests", "Requests to /generate by status code", ["status"], registry=registry)
    latency = Histogram(
        "generate_latency_seconds",
        "Latency of successful /generate requests",
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    tokens = Counter("generated_tokens", "Tokens generated", registry=registry)

    app = FastAPI(
        title="Character-level transformer",
        description="Text generation with the latest good release, on ONNX Runtime.",
        version="1.0",
        max_body_size=MAX_BODY_BYTES,  # 413 for larger bodies, declared or chunked
    )
    app.state.watcher = watcher

    @app.middleware("http")
    async def count_generate_requests(request: Request, call_next):
        response = await call_next(request)
        if request.url.path == "/generate":
            requests.labels(status=str(response.status_code)).inc()
        return response

    @app.post("/generate", response_model=GenerateResponse)
    def generate(body: GenerateRequest) -> GenerateResponse:
        """Sample up to `max_new_tokens` characters after `prompt` (context cropped to the model's block size)."""
        generator = watcher.current()
        if body.unknown_characters == "reject":
            missing = sorted({ch for ch in body.prompt if ch not in generator.tokenizer.symbols[1:]})
            if missing:
                raise HTTPException(422, f"prompt has characters outside the vocabulary: {''.join(missing)!r}")
        start = time.perf_counter()
        try:
            result = generator.generate(body.prompt, body.max_new_tokens, body.temperature, body.top_k, body.seed)
        except GenerationRequestError as error:
            raise HTTPException(422, str(error)) from error
        seconds = time.perf_counter() - start
        latency.observe(seconds)
        tokens.inc(result.tokens)
        return GenerateResponse(
            text=result.text,
            generated_tokens=result.tokens,
            latency_ms=1000 * seconds,
            ms_per_token=1000 * result.seconds / result.tokens,
            unknown_characters=result.unknown_characters,
            release=generator.version,
        )

    @app.get("/health")
    def health() -> dict:
        """The release being served; `ready` is true once a model is loaded."""
        generator = watcher.current()
        return {
            "ready": True,
            "release": generator.version,
            "model_sha256": generator.card["model_sha256"],
            "block_size": generator.block_size,
            "vocab_size": generator.tokenizer.vocab_size,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Request counts, latency histogram and generated tokens in Prometheus text format."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
