"""OpenAI's `POST /v1/chat/completions`: the messages rendered with the release's chat template into the prompt this
base model continues (as vLLM serves base models), the reply ending at the template's turn end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Body

from deploy_code_location.chat_template import ChatTemplateError
from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.serving.choices import DONE, ChunkWriter, chat_logprobs, dumps, usage
from deploy_code_location.serving.errors import ApiError, openai_documented
from deploy_code_location.serving.event_stream import EventStreamResponse
from deploy_code_location.serving.openai_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
)
from deploy_code_location.serving.state import Server, ServerState, sampler
from deploy_code_location.serving.streams import Choice, DecodingJob

router = APIRouter(tags=["OpenAI"])

DEFAULT_MAX_TOKENS = 200
STREAM_RESPONSE = {
    "description": "The chat completion; with `stream: true`, server-sent events: one `ChatCompletionChunk` per "
    "`data:` line (each choice's role, then its new text, then its `finish_reason`), then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}},
}


def render_messages(generator: OnnxGenerator, messages: list, add_generation_prompt: bool = True) -> str:
    """The prompt for chat `messages` (pydantic `Message`s) with the release's template; 400 if it cannot."""
    try:
        prompt = generator.chat_template.render(
            [m.model_dump(exclude_none=True) for m in messages], add_generation_prompt
        )
    except ChatTemplateError as error:
        raise ApiError(400, str(error), "messages", "invalid_value") from error
    if not prompt:
        raise ApiError(400, "the chat template rendered these messages as an empty prompt", "messages", "invalid_value")
    return prompt


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: STREAM_RESPONSE, **openai_documented(400, 404, 413, 503)},
)
async def chat_completions(server: Server, body: ChatCompletionRequest = Body()):
    """OpenAI's chat completions, on the chat template that ships with the release."""
    _check(body)
    generator = server.generator()
    server.check_model(body.model, generator)
    prompt = render_messages(generator, body.messages)
    job = _job(server, generator, body, prompt)
    server.start(job)
    header = server.response_header("chatcmpl", "chat.completion", generator)
    prompt_tokens = len(prompt)
    if body.stream:
        writer = ChunkWriter(header | {"object": "chat.completion.chunk"})
        return EventStreamResponse(_events(server, job, body, writer, prompt_tokens), job, server.stall_watch)
    started = time.perf_counter()
    choices = await job.wait()
    server.metrics.finished(job, time.perf_counter() - started)
    symbols = generator.tokenizer.symbols
    return ChatCompletion(
        **header, choices=[_choice(c, body, symbols) for c in choices], usage=usage(job, prompt_tokens)
    )


def _check(body: ChatCompletionRequest) -> None:
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options", "invalid_value")
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")


def _job(server: ServerState, generator: OnnxGenerator, body: ChatCompletionRequest, prompt: str) -> DecodingJob:
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    ids, _ = generator.encode_prompt(prompt)
    seeds = [None if body.seed is None else body.seed + choice for choice in range(body.n or 1)]
    prompts = [(ids, sampler(temperature, top_p, None, seed)) for seed in seeds]
    user_stops = [] if body.stop is None else [body.stop] if isinstance(body.stop, str) else list(body.stop)
    stops = [*generator.chat_template.stop, *user_stops]
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return DecodingJob(
        server.batcher, generator, server.waker, prompts, max_tokens, stops, logprobs, streaming=bool(body.stream)
    )


def _choice(choice: Choice, body: ChatCompletionRequest, symbols) -> ChatChoice:
    logprobs = chat_logprobs(choice.text, choice.scores, symbols) if body.logprobs else None
    return ChatChoice(
        index=choice.index,
        message=AssistantMessage(content=choice.text),
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
    )


async def _events(
    server: ServerState, job: DecodingJob, body: ChatCompletionRequest, writer: ChunkWriter, prompt_tokens: int
) -> AsyncIterator[bytes]:
    """Each choice's role first, then its text as it comes (every event of a step in one write), then its end."""
    started, symbols = time.perf_counter(), job.generator.tokenizer.symbols
    yield b"".join(writer.event(_choice_json(i, {"role": "assistant", "content": ""})) for i in range(len(job.choices)))
    async for items in job.updates():
        events = []
        for index, piece in items:
            if piece is None:
                events.append(writer.event(_choice_json(index, {}, None, job.choices[index].finish_reason)))
                continue
            logprobs = chat_logprobs(piece.text, piece.scores, symbols) if piece.scores is not None else None
            events.append(writer.event(_choice_json(index, {"content": piece.text}, logprobs)))
        yield b"".join(events)
    server.metrics.finished(job, time.perf_counter() - started)
    with_usage = body.stream_options is not None and body.stream_options.include_usage
    yield (writer.usage_event(usage(job, prompt_tokens)) if with_usage else b"") + DONE


def _choice_json(index: int, delta: dict, logprobs: dict | None = None, finish_reason: str | None = None) -> str:
    return (
        f'{{"index":{index},"delta":{dumps(delta)},"logprobs":{dumps(logprobs)},'
        f'"finish_reason":{dumps(finish_reason)}}}'
    )
