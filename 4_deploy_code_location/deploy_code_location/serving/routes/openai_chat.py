"""OpenAI's `POST /v1/chat/completions`: the messages rendered with the release's chat template into the prompt this
base model continues (as vLLM serves base models), the reply ending at the template's turn end."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Body

from deploy_code_location.chat_template import ChatTemplateError
from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.serving.choices import ChunkWriter, chat_logprobs, dumps
from deploy_code_location.serving.errors import ApiError, openai_documented
from deploy_code_location.serving.generation import Generation
from deploy_code_location.serving.openai_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
)
from deploy_code_location.serving.state import Server
from deploy_code_location.serving.streams import Choice, Piece

router = APIRouter(tags=["OpenAI"])

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
    responses={200: STREAM_RESPONSE, **openai_documented(400, 401, 404, 413, 503)},
)
async def chat_completions(server: Server, body: ChatCompletionRequest = Body()):
    """OpenAI's chat completions, on the chat template that ships with the release."""
    params = body.to_sampling_params()
    generator = server.generator()
    server.check_model(body.model, generator)
    if params.constraint is None:  # the reply ends at the template's turn end too, unless a grammar says where
        params = replace(params, stop=(*generator.chat_template.stop, *params.stop))
    prompt = render_messages(generator, body.messages)
    generation = Generation(server, generator, [prompt], params, bool(body.stream), body.constraint_param)
    header = generation.header("chatcmpl", "chat.completion")
    symbols = generator.tokenizer.symbols
    if body.stream:
        writer = ChunkWriter(header | {"object": "chat.completion.chunk"})
        roles = b"".join(
            writer.event(_choice_json(i, {"role": "assistant", "content": ""}))
            for i in range(len(generation.job.choices))
        )
        formatter = _Formatter(generation, writer, symbols)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return generation.stream(writer, formatter, include_usage, first=roles)
    choices = await generation.choices()
    return ChatCompletion(**header, choices=[_choice(c, body, symbols) for c in choices], usage=generation.usage)


def _choice(choice: Choice, body: ChatCompletionRequest, symbols) -> ChatChoice:
    logprobs = chat_logprobs(choice.text, choice.scores, symbols) if body.logprobs else None
    return ChatChoice(
        index=choice.index,
        message=AssistantMessage(content=choice.text),
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
    )


class _Formatter:
    """One hand-over's events: each choice's new text (with its log-probabilities), each choice's end."""

    def __init__(self, generation: Generation, writer: ChunkWriter, symbols):
        self.job, self.writer, self.symbols = generation.job, writer, symbols

    def __call__(self, items: list[tuple[int, Piece | None]]) -> list[bytes]:
        events = []
        for index, piece in items:
            if piece is None:
                events.append(self.writer.event(_choice_json(index, {}, None, self.job.choices[index].finish_reason)))
                continue
            logprobs = chat_logprobs(piece.text, piece.scores, self.symbols) if piece.scores is not None else None
            events.append(self.writer.event(_choice_json(index, {"content": piece.text}, logprobs)))
        return events


def _choice_json(index: int, delta: dict, logprobs: dict | None = None, finish_reason: str | None = None) -> str:
    return (
        f'{{"index":{index},"delta":{dumps(delta)},"logprobs":{dumps(logprobs)},'
        f'"finish_reason":{dumps(finish_reason)}}}'
    )
