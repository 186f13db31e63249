"""OpenAI's `POST /v1/completions` (with `logprobs`, `echo`, streaming) and `GET /v1/models`, `/v1/models/{model}`."""

from __future__ import annotations

from fastapi import APIRouter, Body

from deploy_code_location.serving.choices import ChunkWriter, dumps, legacy_logprobs
from deploy_code_location.serving.errors import openai_documented
from deploy_code_location.serving.generation import Generation
from deploy_code_location.serving.openai_models import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from deploy_code_location.serving.state import Server
from deploy_code_location.serving.streams import Choice, Piece

router = APIRouter(tags=["OpenAI"])

STREAM_RESPONSE = {
    "description": "The completion; with `stream: true`, server-sent events: one `CompletionChunk` per `data:` line "
    "(each choice's new text, then its `finish_reason`), then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/CompletionChunk"}}},
}


@router.get("/v1/models", response_model=ModelList, responses=openai_documented(401, 503))
def list_models(server: Server) -> ModelList:
    """The one model served (its id stays the same across releases; `release` says which one)."""
    return ModelList(data=[server.model_card(server.generator())])


@router.get("/v1/models/{model}", response_model=ModelCard, responses=openai_documented(401, 404, 503))
def retrieve_model(model: str, server: Server) -> ModelCard:
    """The model called `model` (its id, or the release's version), else 404."""
    generator = server.generator()
    server.check_model(model, generator)
    return server.model_card(generator)


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={200: STREAM_RESPONSE, **openai_documented(400, 401, 404, 413, 503)},
)
async def completions(server: Server, body: CompletionRequest = Body()):
    """OpenAI's completions. `echo` with `max_tokens: 0` and `logprobs` scores a text; `stream: true` answers with
    server-sent events; `response_format` or `structured_outputs` constrain the text to a grammar."""
    params = body.to_sampling_params()
    generator = server.generator()
    server.check_model(body.model, generator)
    generation = Generation(server, generator, body.prompts, params, bool(body.stream), body.constraint_param)
    header = generation.header("cmpl", "text_completion")
    symbols = generator.tokenizer.symbols
    if body.stream:
        writer = ChunkWriter(header)
        formatter = _Formatter(body, generation, writer, symbols)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return generation.stream(writer, formatter, include_usage)
    choices = await generation.choices()
    return Completion(**header, choices=[_choice(c, body, symbols) for c in choices], usage=generation.usage)


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


class _Formatter:
    """One hand-over's events: an echo first (once per choice), each choice's new text with its log-probabilities,
    each choice's last chunk with its reason."""

    def __init__(self, body: CompletionRequest, generation: Generation, writer: ChunkWriter, symbols):
        self.body, self.job, self.writer, self.symbols = body, generation.job, writer, symbols
        self.offsets = [len(_prompt_of(c, body)) for c in self.job.choices]
        self.echoed: set[int] = set()

    def __call__(self, items: list[tuple[int, Piece | None]]) -> list[bytes]:
        events, body = [], self.body
        for index, piece in items:
            choice = self.job.choices[index]
            if body.echo and index not in self.echoed:
                self.echoed.add(index)
                prompt = _prompt_of(choice, body)
                echo = _echo_logprobs(choice, prompt, self.symbols) if body.logprobs is not None else None
                events.append(self.writer.event(_choice_json(prompt, index, echo, None)))
            if piece is None:
                events.append(self.writer.event(_choice_json("", index, None, choice.finish_reason)))
                continue
            logprobs = None
            if piece.scores is not None:
                logprobs = legacy_logprobs(piece.text, piece.scores, self.offsets[index], self.symbols)
            self.offsets[index] += len(piece.text)
            events.append(self.writer.event(_choice_json(piece.text, index, logprobs, None)))
        return events


def _choice_json(text: str, index: int, logprobs: dict | None, finish_reason: str | None) -> str:
    return (
        f'{{"text":{dumps(text)},"index":{index},"logprobs":{dumps(logprobs)},"finish_reason":{dumps(finish_reason)}}}'
    )
