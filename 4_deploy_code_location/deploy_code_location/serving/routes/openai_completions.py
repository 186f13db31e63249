"""OpenAI's `POST /v1/completions` (with `logprobs`, `echo`, streaming) and `GET /v1/models`, `/v1/models/{model}`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Body

from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.serving.choices import DONE, ChunkWriter, dumps, legacy_logprobs, usage
from deploy_code_location.serving.errors import ApiError, openai_documented
from deploy_code_location.serving.event_stream import EventStreamResponse
from deploy_code_location.serving.openai_models import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from deploy_code_location.serving.state import Server, ServerState, sampler
from deploy_code_location.serving.streams import Choice, DecodingJob

router = APIRouter(tags=["OpenAI"])

STREAM_RESPONSE = {
    "description": "The completion; with `stream: true`, server-sent events: one `CompletionChunk` per `data:` line "
    "(each choice's new text, then its `finish_reason`), then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/CompletionChunk"}}},
}


@router.get("/v1/models", response_model=ModelList, responses=openai_documented(503))
def list_models(server: Server) -> ModelList:
    """The one model served (its id stays the same across releases; `release` says which one)."""
    return ModelList(data=[server.model_card(server.generator())])


@router.get("/v1/models/{model}", response_model=ModelCard, responses=openai_documented(404, 503))
def retrieve_model(model: str, server: Server) -> ModelCard:
    """The model called `model` (its id, or the release's version), else 404."""
    generator = server.generator()
    server.check_model(model, generator)
    return server.model_card(generator)


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={200: STREAM_RESPONSE, **openai_documented(400, 404, 413, 503)},
)
async def completions(server: Server, body: CompletionRequest = Body()):
    """OpenAI's completions. `echo` with `max_tokens: 0` and `logprobs` scores a text; `stream: true` answers with
    server-sent events."""
    _check(body)
    generator = server.generator()
    server.check_model(body.model, generator)
    job, prompt_tokens = _job(server, generator, body)
    server.start(job)
    header = server.response_header("cmpl", "text_completion", generator)
    if body.stream:
        events = _events(server, job, body, ChunkWriter(header), prompt_tokens)
        return EventStreamResponse(events, job, server.stall_watch)
    started = time.perf_counter()
    choices = await job.wait()
    server.metrics.finished(job, time.perf_counter() - started)
    symbols = generator.tokenizer.symbols
    return Completion(**header, choices=[_choice(c, body, symbols) for c in choices], usage=usage(job, prompt_tokens))


def _check(body: CompletionRequest) -> None:
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options", "invalid_value")
    if body.max_tokens == 0 and not body.echo:
        raise ApiError(
            400, "max_tokens 0 generates nothing: only with echo (to score the prompt)", "max_tokens", "invalid_value"
        )


def _job(server: ServerState, generator: OnnxGenerator, body: CompletionRequest) -> tuple[DecodingJob, int]:
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    n, prompts, prompt_tokens = body.n or 1, [], 0
    for prompt in body.prompts:
        ids, _ = generator.encode_prompt(prompt)
        prompt_tokens += len(ids)
        for choice in range(n):
            seed = None if body.seed is None else body.seed + choice
            prompts.append((ids, sampler(temperature, top_p, None, seed)))
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    logprobs, echo = body.logprobs, bool(body.echo)
    job = DecodingJob(
        server.batcher,
        generator,
        server.waker,
        prompts,
        max_tokens,
        _stops(body.stop),
        logprobs,
        score_prompt=echo and logprobs is not None,
        streaming=bool(body.stream),
    )
    return job, prompt_tokens


def _stops(stop: str | list[str] | None) -> list[str]:
    return [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


def _prompt_of(choice: Choice, body: CompletionRequest) -> str:
    return body.prompts[choice.index // (body.n or 1)]


def _choice(choice: Choice, body: CompletionRequest, symbols) -> CompletionChoice:
    prompt, text = _prompt_of(choice, body), choice.text
    logprobs = None
    if body.logprobs is not None:
        logprobs = legacy_logprobs(text, choice.scores, len(prompt), symbols)
        if body.echo:
            logprobs = _merge(_echo_logprobs(choice, prompt, symbols), logprobs)
    return CompletionChoice(
        text=prompt + text if body.echo else text,
        index=choice.index,
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
    )


def _echo_logprobs(choice: Choice, prompt: str, symbols) -> dict[str, list]:
    scores = choice.sequence.prompt_scores
    if scores is None or len(scores) != len(prompt) - 1:  # cancelled before its prefill: nothing was scored
        scores = [None] * (len(prompt) - 1)
    return legacy_logprobs(prompt, [None, *scores], 0, symbols)


def _merge(first: dict[str, list], second: dict[str, list]) -> dict[str, list]:
    return {key: first[key] + second[key] for key in first}


async def _events(
    server: ServerState, job: DecodingJob, body: CompletionRequest, writer: ChunkWriter, prompt_tokens: int
) -> AsyncIterator[bytes]:
    """Every event of one decoding step in one write; an echo first, each choice's last chunk with its reason."""
    started, symbols, echoed = time.perf_counter(), job.generator.tokenizer.symbols, set()
    offsets = [len(_prompt_of(c, body)) for c in job.choices]
    async for items in job.updates():
        events = []
        for index, piece in items:
            choice = job.choices[index]
            if body.echo and index not in echoed:
                echoed.add(index)
                prompt = _prompt_of(choice, body)
                echo = _echo_logprobs(choice, prompt, symbols) if body.logprobs is not None else None
                events.append(writer.event(_choice_json(prompt, index, echo, None)))
            if piece is None:
                events.append(writer.event(_choice_json("", index, None, choice.finish_reason)))
                continue
            logprobs = (
                None if piece.scores is None else legacy_logprobs(piece.text, piece.scores, offsets[index], symbols)
            )
            offsets[index] += len(piece.text)
            events.append(writer.event(_choice_json(piece.text, index, logprobs, None)))
        yield b"".join(events)
    server.metrics.finished(job, time.perf_counter() - started)
    with_usage = body.stream_options is not None and body.stream_options.include_usage
    yield (writer.usage_event(usage(job, prompt_tokens)) if with_usage else b"") + DONE


def _choice_json(text: str, index: int, logprobs: dict | None, finish_reason: str | None) -> str:
    return (
        f'{{"text":{dumps(text)},"index":{index},"logprobs":{dumps(logprobs)},"finish_reason":{dumps(finish_reason)}}}'
    )
