"""OpenAI's API under `/v1`: completions (with `logprobs` and `echo`, the legacy shape), chat completions, models
and errors, as this server accepts and answers them.

Parameters a character model cannot honour are offered at their neutral value only (`best_of` 1, penalties 0, an
empty `logit_bias`, no `suffix`, no `tools`), which is what clients send when they leave them alone; anything else
gets a 400 whose `code` is `unsupported_parameter` and whose `param` names it. Unknown parameters get a 400 too
(`unrecognized_parameter`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploy_code_location.serving.api_models import (
    MAX_CHOICES,
    MAX_NEW_TOKENS,
    MAX_PROMPTS,
    MAX_STOPS,
    STRICT,
    Messages,
    PromptText,
    Seed,
    Text,
    whole,
)

#: Parameters accepted at their neutral value only (the OpenAPI document says which value).
REFUSED = frozenset(
    {"best_of", "presence_penalty", "frequency_penalty", "logit_bias", "suffix", "tools", "tool_choice"}
)
MAX_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20
Stops = Text | Annotated[list[Text], Field(max_length=MAX_STOPS)]


class OpenAIErrorBody(BaseModel):
    """OpenAI's error object."""

    message: str
    type: Literal["invalid_request_error", "server_error"]
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error of the `/v1` endpoints has OpenAI's shape."""

    error: OpenAIErrorBody


class StreamOptions(BaseModel):
    """`stream_options` (only with `stream: true`): `include_usage` adds a last chunk with the token counts."""

    model_config = STRICT

    include_usage: bool = False


class _Sampling(BaseModel):
    """What completions and chat completions share."""

    model_config = STRICT

    model: str = Field(description="`char-transformer` (see `GET /v1/models`), or the release's version")
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 is greedy")
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: whole(1, MAX_CHOICES) | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Stops | None = Field(default=None, description="up to 4 strings; never included in the text")
    seed: Seed | None = Field(default=None, description="choice i of a request samples with seed + i")
    user: str | None = None
    presence_penalty: float | None = Field(default=0.0, ge=0.0, le=0.0, description="only 0: no penalties here")
    frequency_penalty: float | None = Field(default=0.0, ge=0.0, le=0.0, description="only 0: no penalties here")
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0, description="only empty")


class CompletionRequest(_Sampling):
    """OpenAI's `POST /v1/completions` body. `echo` returns the prompt before the completion; with `logprobs`
    (0 to 5) each token comes with its log-probability and that many likeliest alternatives. `echo` with
    `max_tokens: 0` scores a text without generating (the first token has no log-probability: nothing precedes
    it)."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={
            "examples": [{"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 50, "seed": 1}]
        }
    )

    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: whole(0, MAX_NEW_TOKENS) | None = Field(default=16, description="0 only with `echo`")
    logprobs: whole(0, MAX_LOGPROBS) | None = None
    echo: bool | None = False
    best_of: whole(1, 1) | None = Field(default=1, description="only 1")
    suffix: None = Field(default=None, description="not supported: leave it out")

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatCompletionRequest(_Sampling):
    """OpenAI's `POST /v1/chat/completions` body. `messages` are rendered into one prompt with the release's chat
    template (a play's speaker turns by default); the reply ends at the template's turn end (a blank line) or at a
    `stop` string."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "char-transformer",
                    "messages": [{"role": "user", "content": "What light through yonder window breaks?"}],
                    "max_tokens": 100,
                    "seed": 1,
                }
            ]
        }
    )

    messages: Messages
    max_tokens: whole(1, MAX_NEW_TOKENS) | None = Field(default=None, description="default 200")
    max_completion_tokens: whole(1, MAX_NEW_TOKENS) | None = Field(default=None, description="as max_tokens")
    logprobs: bool | None = False
    top_logprobs: whole(0, MAX_TOP_LOGPROBS) | None = Field(default=None, description="only with `logprobs`")
    tools: Annotated[list[dict], Field(max_length=0)] | None = Field(default=None, description="only empty")
    tool_choice: Literal["none"] | None = Field(default=None, description="only none")


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy log-probabilities: per token its text, log-probability (None for a prompt's first token),
    the likeliest alternatives with theirs, and its character offset in prompt + completion."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """OpenAI's completion object."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(Completion):
    """One server-sent event of a streamed completion: each choice's new text (`finish_reason` set in its last
    chunk); with `stream_options.include_usage`, a last chunk with no choices and the `usage`."""

    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    """OpenAI's chat completion object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion: first each choice's role, then its new text, then its
    `finish_reason`; with `stream_options.include_usage`, a last chunk with no choices and the `usage`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    release: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
