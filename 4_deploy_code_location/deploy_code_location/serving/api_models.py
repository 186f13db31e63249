"""Request and response bodies: the server's own `/generate` shape and OpenAI's completions API.

Types are strict (`"5"` is not an int, `false` is not a seed), numbers finite (NaN, Infinity and 1e400 are refused)
and text must be text (a lone surrogate such as `"\\ud800"` is refused): every bad request gets a 4xx that says what is
wrong, in a shape the OpenAPI document gives.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_NEW_TOKENS = 1000
MAX_PROMPT_CHARACTERS = 4000
MAX_PROMPTS = 16
MAX_CHOICES = 8
MAX_STOPS = 4
_STRICT = ConfigDict(extra="forbid", strict=True)


def text_or_error(value: str, name: str) -> str:
    """`value` if it can be written as UTF-8; a lone surrogate (from a `\\ud800` escape) is not text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name} holds a lone surrogate U+{ord(value[error.start]):04X} at index {error.start}, which is not text"
        ) from None
    return value


class ErrorItem(BaseModel):
    """One problem with a request: where (`loc`), what kind (`type`) and a message."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None


class ErrorResponse(BaseModel):
    """Every error of the server's own endpoints (400, 413, 422, 500, 503) has this shape."""

    detail: list[ErrorItem]


class GenerateRequest(BaseModel):
    """A generation request. Characters outside the model's vocabulary follow `unknown_characters`: `replace`
    (the default) maps each to the unknown symbol U+FFFD, which the model has never seen; `reject` answers 422."""

    model_config = _STRICT

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS, examples=["ROMEO:\n"])
    max_new_tokens: int = Field(default=100, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.8, gt=0.0, le=10.0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    unknown_characters: Literal["replace", "reject"] = "replace"

    @field_validator("prompt")
    @classmethod
    def _text(cls, value: str) -> str:
        return text_or_error(value, "prompt")


class GenerateResponse(BaseModel):
    """Generated text and how long it took."""

    text: str
    generated_tokens: int
    latency_ms: float
    ms_per_token: float
    unknown_characters: int
    release: str


class OpenAIErrorBody(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error of the `/v1` endpoints has OpenAI's shape."""

    error: OpenAIErrorBody


class StreamOptions(BaseModel):
    """`stream_options`: `include_usage` adds a last chunk with the token counts."""

    model_config = _STRICT

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's `POST /v1/completions` body. The parameters this character model cannot honour (`logprobs`,
    `echo`, `best_of` > 1, penalties, `logit_bias`, `suffix`) are refused with a 400 that names them."""

    model_config = _STRICT

    model: str
    prompt: str | list[str] = Field(examples=["ROMEO:\n"])
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int | None = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    user: str | None = None
    # Accepted only at their neutral values (what OpenAI does when they are left out).
    logprobs: int | None = None
    echo: bool | None = False
    best_of: int | None = None
    presence_penalty: float | None = Field(default=0.0, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=0.0, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise ValueError(f"give 1 to {MAX_PROMPTS} prompts")
        for prompt in prompts:
            if not prompt or len(prompt) > MAX_PROMPT_CHARACTERS:
                raise ValueError(f"each prompt needs 1 to {MAX_PROMPT_CHARACTERS} characters")
            text_or_error(prompt, "prompt")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [] if value is None else [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        for stop in stops:
            text_or_error(stop, "stop")
        return value

    def unsupported(self) -> str | None:
        """The first parameter set to something this server cannot do, else None."""
        neutral = {
            "logprobs": self.logprobs is None,
            "echo": not self.echo,
            "best_of": self.best_of in (None, 1),
            "presence_penalty": not self.presence_penalty,
            "frequency_penalty": not self.frequency_penalty,
            "logit_bias": not self.logit_bias,
            "suffix": self.suffix is None,
        }
        return next((name for name, ok in neutral.items() if not ok), None)

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def stops(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """OpenAI's completion object; also each streamed chunk (`choices` then hold one piece of text each, and the
    last chunk, with `stream_options.include_usage`, holds only `usage`)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
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
