"""Operations: `/health` (live), `/ready` (a release is loaded), `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deploy_code_location.serving.api_models import Health, Readiness
from deploy_code_location.serving.errors import documented
from deploy_code_location.serving.state import Server

router = APIRouter(tags=["Operations"])


@router.get("/health", response_model=Health, operation_id="health")
@router.head("/health", response_model=Health, operation_id="health_head")
def health(server: Server) -> Health:
    """Liveness: the process answers. (Readiness is `/ready`.)"""
    return Health(release=server.watcher.version)


@router.get("/ready", response_model=Readiness, responses=documented((500, 503)), operation_id="ready")
@router.head("/ready", response_model=Readiness, responses=documented((500, 503)), operation_id="ready_head")
def ready(server: Server) -> Readiness:
    """Ready when a release is loaded: its version, sha256 and shape; 503 before the first release."""
    generator = server.generator()
    return Readiness(
        release=generator.version,
        model_sha256=generator.card["model_sha256"],
        block_size=generator.block_size,
        vocab_size=generator.tokenizer.vocab_size,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
def metrics(server: Server) -> PlainTextResponse:
    """Requests by route and status, latency, time to first token, batch sizes, queue depth, tokens, CPU time."""
    return PlainTextResponse(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)
