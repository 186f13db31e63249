"""What every route shares: the release being served, the batcher, the metrics; reached with the `Server` dependency."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import ReleaseNotFoundError
from deploy_code_location.serving.batcher import Batcher, QueueFullError
from deploy_code_location.serving.errors import ApiError
from deploy_code_location.serving.event_stream import StallWatch
from deploy_code_location.serving.metrics import ServerMetrics
from deploy_code_location.serving.openai_models import ModelCard
from deploy_code_location.serving.release_watcher import ReleaseWatcher
from deploy_code_location.serving.streams import DecodingJob, LoopWaker

OWNER = "dagster-ml-pipeline"


@dataclass
class ServerState:
    """The server's parts, made once by `create_app`."""

    watcher: ReleaseWatcher
    batcher: Batcher
    waker: LoopWaker
    metrics: ServerMetrics
    stall_watch: StallWatch
    model_name: str

    def generator(self) -> OnnxGenerator:
        """The release to serve this request with; a 503 (`not_ready`) while there is none."""
        try:
            return self.watcher.current()
        except ReleaseNotFoundError as error:
            raise ApiError(503, str(error), code="not_ready") from error

    def check_model(self, model: str | None, generator: OnnxGenerator) -> None:
        """A 404 (`model_not_found`) unless `model` names the served model (or its release); None is fine."""
        if model is not None and model not in (self.model_name, generator.version):
            raise ApiError(
                404, f"model {model!r} does not exist; this server has {self.model_name!r}", "model", "model_not_found"
            )

    def start(self, job: DecodingJob) -> DecodingJob:
        """Queue `job`; a 503 (`overloaded`) when the queue is full."""
        try:
            return job.start()
        except QueueFullError as error:
            raise ApiError(503, f"server overloaded: {error}", code="overloaded") from error

    def response_header(self, id_prefix: str, object_name: str, generator: OnnxGenerator) -> dict[str, object]:
        """The fields every OpenAI response and stream chunk of one request shares: a new id, its object, when,
        the model and, as `system_fingerprint`, the release that answers."""
        return {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": object_name,
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": generator.version,
        }

    def model_card(self, generator: OnnxGenerator) -> ModelCard:
        """The served model as `/v1/models` lists it (created: the release's time, from its model card)."""
        created_at = generator.card.get("created_at")
        created = int(dt.datetime.fromisoformat(created_at).timestamp()) if created_at else 0
        return ModelCard(
            id=self.model_name,
            created=created,
            owned_by=OWNER,
            release=generator.version,
            max_model_len=generator.block_size,
        )


def server_state(request: Request) -> ServerState:
    """The `ServerState` of the app serving `request`."""
    return request.app.state.server


#: A route's parameter that receives the server's state.
Server = Annotated[ServerState, Depends(server_state)]
