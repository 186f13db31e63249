"""OpenAI's API under `/v1`: completions (with `logprobs` and `echo`, the legacy shape), chat completions, models
and errors, as this server accepts and answers them, with vLLM's extra sampling parameters and structured outputs.

Each request model turns itself into the engine's `SamplingParams` (`to_sampling_params`, as vLLM's protocol does),
checking the rules that join two fields; `InvalidRequest` names the parameter. Every such rule is in the OpenAPI
document too: in the field's description and, where JSON Schema can say it, as a constraint (`CROSS_FIELD_RULES`).

Parameters a character model cannot honour are offered at their neutral value only (`best_of` 1, no `suffix`, no
`tools`), which is what clients send when they leave them alone; anything else gets a 400 whose `code` is
`unsupported_parameter` and whose `param` names it. Unknown parameters get a 400 too (`unrecognized_parameter`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deploy_code_location.sampling import SamplingParams
from deploy_code_location.serving.api_models import (
    MAX_CHOICES,
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARACTERS,
    MAX_PROMPTS,
    MAX_STOPS,
    STRICT,
    Messages,
    PromptText,
    Seed,
    Text,
    whole,
)
from deploy_code_location.structured_output import Constraint

#: Parameters accepted at their neutral value only (the OpenAPI document says which value).
REFUSED = frozenset({"best_of", "suffix", "tools", "tool_choice"})
#: vLLM's structured-output fields before 0.12, and what replaced them: named in the 400 a client that sends one gets.
REMOVED_GUIDED = {
    "guided_json": "structured_outputs.json",
    "guided_regex": "structured_outputs.regex",
    "guided_choice": "structured_outputs.choice",
    "guided_grammar": "structured_outputs.grammar",
    "guided_decoding_backend": "nothing (this server has one backend, llguidance)",
    "guided_whitespace_pattern": "structured_outputs.whitespace_pattern",
}
MAX_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # OpenAI's limit
MAX_CHOICE_STRINGS = 64
Stops = Text | Annotated[list[Text], Field(max_length=MAX_STOPS)]
#: A token id written as a string (`"12"`), as OpenAI's `logit_bias` keys are.
TokenIdKey = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,8})$")]
Bias = Annotated[float, Field(ge=-100.0, le=100.0, allow_inf_nan=False)]
Constrained = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS)]


class InvalidRequest(ValueError):
    """A request whose fields do not go together: a 400 naming `param`."""

    def __init__(self, message: str, param: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


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


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`: the schema the text must match, and its name."""

    model_config = STRICT

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="a JSON schema; none: any JSON object"
    )
    strict: bool | None = Field(default=None, description="always strict here: the text matches the schema")


class TextFormat(BaseModel):
    """Plain text (the default)."""

    model_config = STRICT

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """Any JSON object."""

    model_config = STRICT

    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    """JSON that matches `json_schema.schema`."""

    model_config = STRICT

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]

_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: exactly one of `json` (a JSON schema), `regex`, `choice` (the text is one of
    these strings), `grammar` (Lark, or llama.cpp's GBNF) or `json_object: true` (any JSON object). JSON has no
    whitespace between its tokens unless `disable_any_whitespace` is false (vLLM's default is false: a model
    trained on prose fills free whitespace with newlines) or `whitespace_pattern` says which;
    `disable_additional_properties` closes every object the schema leaves open."""

    model_config = STRICT | ConfigDict(json_schema_extra={"oneOf": [{"required": [name]} for name in _CONSTRAINTS]})

    json_: dict[str, Any] | Constrained = Field(default=None, alias="json", description="a JSON schema")
    regex: Constrained = Field(default=None, description="the whole text matches it (Rust regex syntax)")
    choice: Annotated[list[Constrained], Field(min_length=1, max_length=MAX_CHOICE_STRINGS)] = None
    grammar: Constrained = Field(default=None, description="Lark (llguidance's dialect) or GBNF")
    json_object: Literal[True] = None
    disable_any_whitespace: bool = True
    disable_additional_properties: bool = False
    whitespace_pattern: Constrained | None = Field(default=None, description="a regex for JSON's whitespace")

    @model_validator(mode="after")
    def _one_constraint(self) -> StructuredOutputs:
        given = [name for name in _CONSTRAINTS if getattr(self, "json_" if name == "json" else name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_CONSTRAINTS)} (got {', '.join(given) or 'none'})")
        return self

    def constraint(self) -> Constraint:
        """The engine's constraint."""
        kind = next(n for n in _CONSTRAINTS if getattr(self, "json_" if n == "json" else n) is not None)
        value = {"json": self.json_, "regex": self.regex, "choice": self.choice, "grammar": self.grammar}.get(kind)
        return Constraint(
            kind,
            value,
            any_whitespace=not self.disable_any_whitespace or self.whitespace_pattern is not None,
            closed_objects=self.disable_additional_properties,
            whitespace_pattern=self.whitespace_pattern,
        )


def _given(name: str, schema: dict | None = None) -> dict:
    """JSON Schema: `name` is present and not null (or matches `schema`)."""
    return {"required": [name], "properties": {name: schema or {"not": {"type": "null"}}}}


_STRUCTURED = {
    "anyOf": [
        _given("structured_outputs"),
        _given("response_format", {"type": "object", "properties": {"type": {"enum": ["json_object", "json_schema"]}},
                                   "required": ["type"]}),
    ]
}  # fmt: skip
#: The rules that join two fields of both endpoints, as JSON Schema (`if`/`then`, `not`).
CROSS_FIELD_RULES = [
    {"if": _given("stream_options"), "then": _given("stream", {"const": True})},
    {"if": _STRUCTURED, "then": {"properties": {"stop": {"anyOf": [{"type": "null"}, {"maxItems": 0}]}}}},
    {"not": {"allOf": _STRUCTURED["anyOf"]}},
]


class _Sampling(BaseModel):
    """What completions and chat completions share."""

    model_config = STRICT

    model: str = Field(description="`char-transformer` (see `GET /v1/models`), or the release's version")
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 is greedy")
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: whole(1, MAX_CHOICES) | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = Field(default=None, description="only with `stream: true`")
    stop: Stops | None = Field(
        default=None,
        description="up to 4 strings; never included in the text, never matched before `min_tokens` characters; "
        "not with structured output (the grammar says where the text ends)",
    )
    seed: Seed | None = Field(default=None, description="choice i of a request samples with seed + i")
    user: str | None = None
    presence_penalty: float | None = Field(
        default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False,
        description="subtracted from the logit of every token the output already holds",
    )  # fmt: skip
    frequency_penalty: float | None = Field(
        default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False,
        description="subtracted from a token's logit once per time the output already holds it",
    )  # fmt: skip
    logit_bias: Annotated[dict[TokenIdKey, Bias], Field(max_length=MAX_LOGIT_BIAS)] | None = Field(
        default=None,
        description="token id (a string; below the vocabulary size of `GET /tokenizer_info`) -> a value from -100 to "
        "100 added to its logit before sampling: -100 bans it, 100 all but forces it",
    )
    top_k: whole(-1) | None = Field(default=None, description="vLLM's: the k likeliest tokens only; 0 or -1: all")
    min_p: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="vLLM's: tokens less likely than min_p times the likeliest are dropped",
    )  # fmt: skip
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, allow_inf_nan=False,
        description="vLLM's (CTRL's): a token of the prompt or the output has its logit divided by it (if positive) "
        "or multiplied (if negative); above 1 discourages repeats",
    )  # fmt: skip
    min_tokens: whole(0, MAX_NEW_TOKENS) | None = Field(
        default=0,
        description="vLLM's: no stop string, and no end of a grammar that could go on, before this many tokens; at "
        "most the maximum number of tokens",
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description="OpenAI's: `json_object` or `json_schema` constrain the text (see `structured_outputs`); not with "
        "`structured_outputs`",
    )
    structured_outputs: StructuredOutputs | None = Field(
        default=None, description="vLLM's: a regex, a choice, a JSON schema or a grammar the text must match"
    )

    @property
    def constraint_param(self) -> str:
        """The field that carries this request's structured output (named in its errors)."""
        return "structured_outputs" if self.structured_outputs is not None else "response_format"

    def _sampling_params(self, max_tokens: int, stop: tuple[str, ...], logprobs: int | None, **extra) -> SamplingParams:
        """The engine's parameters (unset fields at their neutral value), the joint rules checked."""
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest("stream_options is only allowed with stream: true", "stream_options")
        constraint = self._constraint()
        user_stops = _stops(self.stop)
        if constraint is not None and user_stops:
            raise InvalidRequest(
                "stop cannot be combined with structured output: the grammar says where the text ends", "stop"
            )
        min_tokens = self.min_tokens or 0
        if min_tokens > max_tokens:
            raise InvalidRequest(
                f"min_tokens {min_tokens} is more than the {max_tokens} tokens asked for", "min_tokens"
            )
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            min_p=self.min_p or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias={int(token): bias for token, bias in (self.logit_bias or {}).items()},
            seed=self.seed,
            n=self.n or 1,
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            stop=stop if constraint is None else (),
            logprobs=logprobs,
            constraint=constraint,
            **extra,
        )

    def _constraint(self) -> Constraint | None:
        text = self.response_format is None or self.response_format.type == "text"
        if self.structured_outputs is not None and not text:
            raise InvalidRequest("give response_format or structured_outputs, not both", "response_format")
        if self.structured_outputs is not None:
            return self.structured_outputs.constraint()
        if isinstance(self.response_format, JsonObjectFormat):
            return Constraint("json_object", None)
        if isinstance(self.response_format, JsonSchemaResponseFormat):
            schema = self.response_format.json_schema.schema_
            return Constraint("json_object", None) if schema is None else Constraint("json", schema)
        return None


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    return () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)


def _rules(*extra: dict) -> dict:
    return {"allOf": [*CROSS_FIELD_RULES, *extra]}


class CompletionRequest(_Sampling):
    """OpenAI's `POST /v1/completions` body. `echo` returns the prompt before the completion; with `logprobs`
    (0 to 5) each token comes with its log-probability and that many likeliest alternatives. `echo` with
    `max_tokens: 0` scores a text without generating (the first token has no log-probability: nothing precedes
    it)."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={
            "examples": [{"model": "char-transformer", "prompt": "ROMEO:\n", "max_tokens": 50, "seed": 1}],
            **_rules({"if": _given("max_tokens", {"const": 0}), "then": _given("echo", {"const": True})}),
        }
    )

    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: whole(0, MAX_NEW_TOKENS) | None = Field(default=16, description="0 only with `echo: true`")
    logprobs: whole(0, MAX_LOGPROBS) | None = None
    echo: bool | None = False
    best_of: whole(1, 1) | None = Field(default=1, description="only 1")
    suffix: None = Field(default=None, description="not supported: leave it out")

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def to_sampling_params(self) -> SamplingParams:
        """The engine's parameters for each prompt of this request."""
        max_tokens = 16 if self.max_tokens is None else self.max_tokens
        if max_tokens == 0 and not self.echo:
            raise InvalidRequest("max_tokens 0 generates nothing: only with echo (to score the prompt)", "max_tokens")
        return self._sampling_params(
            max_tokens,
            _stops(self.stop),
            self.logprobs,
            score_prompt=bool(self.echo) and self.logprobs is not None,
        )


class ChatCompletionRequest(_Sampling):
    """OpenAI's `POST /v1/chat/completions` body. `messages` are rendered into one prompt with the release's chat
    template (a play's speaker turns by default); the reply ends at the template's turn end (a blank line) or at a
    `stop` string, or with structured output where the grammar says."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "char-transformer",
                    "messages": [{"role": "user", "content": "What light through yonder window breaks?"}],
                    "max_tokens": 100,
                    "seed": 1,
                }
            ],
            **_rules({"if": _given("top_logprobs"), "then": _given("logprobs", {"const": True})}),
        }
    )

    messages: Messages
    max_tokens: whole(1, MAX_NEW_TOKENS) | None = Field(default=None, description="default 200")
    max_completion_tokens: whole(1, MAX_NEW_TOKENS) | None = Field(default=None, description="as max_tokens")
    logprobs: bool | None = False
    top_logprobs: whole(0, MAX_TOP_LOGPROBS) | None = Field(default=None, description="only with `logprobs: true`")
    tools: Annotated[list[dict], Field(max_length=0)] | None = Field(default=None, description="only empty")
    tool_choice: Literal["none"] | None = Field(default=None, description="only none")

    def to_sampling_params(self) -> SamplingParams:
        """The engine's parameters (the route adds the chat template's turn end to `stop`, unless a grammar
        decides where the reply ends)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", "top_logprobs")
        max_tokens = self.max_completion_tokens or self.max_tokens or DEFAULT_CHAT_MAX_TOKENS
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._sampling_params(max_tokens, _stops(self.stop), logprobs)


DEFAULT_CHAT_MAX_TOKENS = 200


#: Why a choice ended: "stop" (a stop string, the chat turn's end, or structured output's text complete: it matches
#: the grammar) or "length" (the token limit came first; with structured output the text may be an unfinished match,
#: as it also is when the grammar needs a character outside the vocabulary to go on).
FinishReason = Annotated[
    Literal["stop", "length"],
    Field(description='"stop": a stop string, the turn\'s end, or a grammar\'s complete text; "length": the token '
          "limit (or, with structured output, a grammar that needs a character outside the vocabulary) came first: "
          "the text may not match the grammar yet"),
]  # fmt: skip


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
    finish_reason: FinishReason | None


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
    finish_reason: FinishReason


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
    finish_reason: FinishReason | None = None


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
    """A model as vLLM lists it: `max_model_len` is its context length (longer prompts are cropped to their end)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    release: str
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
