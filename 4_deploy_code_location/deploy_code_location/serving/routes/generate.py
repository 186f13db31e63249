"""`POST /generate`: the server's own generation shape."""

from __future__ import annotations

import time

from fastapi import APIRouter, Body

from deploy_code_location.sampling import SamplingParams
from deploy_code_location.serving.api_models import GenerateRequest, GenerateResponse
from deploy_code_location.serving.errors import ApiError, documented
from deploy_code_location.serving.state import Server
from deploy_code_location.serving.streams import DecodingJob

router = APIRouter(tags=["Generation"])


@router.post("/generate", response_model=GenerateResponse, responses=documented((400, 401, 413, 422, 500, 503)))
async def generate(server: Server, body: GenerateRequest = Body()) -> GenerateResponse:
    """Sample up to `max_new_tokens` characters after `prompt` (context cropped to the model's block size)."""
    generator = server.generator()
    if body.unknown_characters == "reject":
        missing = sorted({ch for ch in body.prompt if ch not in generator.tokenizer.symbols[1:]})
        if missing:
            message = f"prompt has characters outside the vocabulary: {''.join(missing)!r}"
            raise ApiError(422, message, param="prompt", code="value_error")
    ids, unknown = generator.encode_prompt(body.prompt)
    params = SamplingParams(temperature=body.temperature, top_k=body.top_k or 0, seed=body.seed)
    choose = params.sampler(0, ids, generator.tokenizer.vocab_size)
    job = DecodingJob(server.batcher, generator, server.waker, [(ids, choose)], body.max_new_tokens, streaming=False)
    server.start(job)
    started = time.perf_counter()
    (choice,) = await job.wait()
    seconds = time.perf_counter() - started
    server.metrics.finished(job, seconds)
    return GenerateResponse(
        text=choice.text,
        generated_tokens=job.completion_tokens,
        latency_ms=1000 * seconds,
        ms_per_token=1000 * seconds / max(1, job.completion_tokens),
        unknown_characters=unknown,
        release=generator.version,
    )
