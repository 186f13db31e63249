"""Request and response bodies of the server's own endpoints (`/generate`, `/tokenize`, `/detokenize`, operations),
and the types every body shares.

Types are strict (`"5"` is not an int, `false` is not a seed; a whole number may be written `5.0`, which JSON Schema
calls an integer too), numbers finite (NaN, Infinity and 1e400 are refused) and text must be text (a lone surrogate
such as `"\\ud800"` is refused): every bad request gets a 4xx that says what is wrong, in a shape the OpenAPI
document gives, and every limit enforced here is in that document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_NEW_TOKENS = 1000
MAX_PROMPT_CHARACTERS = 4000
MAX_PROMPTS = 16
MAX_CHOICES = 8
MAX_STOPS = 4
MAX_SEED = 2**63 - 1
STRICT = ConfigDict(extra="forbid", strict=True)


def text_or_error(value: str) -> str:
    """`value` if it can be written as UTF-8; a lone surrogate (from a `\\ud800` escape) is not text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"a lone surrogate U+{ord(value[error.start]):04X} at index {error.start} is not text"
        ) from None
    return value


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(ge: int, le: int | None = None) -> Any:
    """An integer type in [ge, le]; `5.0` counts as 5 (JSON Schema's integer), `5.5`, `"5"` and `true` do not."""
    return Annotated[int, annotated_types.Interval(ge=ge, le=le), BeforeValidator(_whole_number)]


#: Text that must be text, of 1 to MAX_PROMPT_CHARACTERS characters.
PromptText = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS), AfterValidator(text_or_error)]
Text = Annotated[str, AfterValidator(text_or_error)]
Seed = whole(0, MAX_SEED)


class ErrorItem(BaseModel):
    """One problem with a request: where (`loc`), what kind (`type`) and a message."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None


class ErrorResponse(BaseModel):
    """Every error of the server's own endpoints has this shape."""

    detail: list[ErrorItem]


class GenerateRequest(BaseModel):
    """A generation request. Characters outside the model's vocabulary follow `unknown_characters`: `replace`
    (the default) maps each to the unknown symbol U+FFFD, which the model has never seen; `reject` answers 422 (while
    a release is served, this document's `pattern` for the prompt under `reject` lists the vocabulary)."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={"examples": [{"prompt": "ROMEO:\n", "max_new_tokens": 100, "temperature": 0.8, "seed": 1}]}
    )

    prompt: PromptText
    max_new_tokens: whole(1, MAX_NEW_TOKENS) = 100
    temperature: float = Field(default=0.8, gt=0.0, le=10.0, allow_inf_nan=False)
    top_k: whole(1) | None = None
    seed: Seed | None = None
    unknown_characters: Literal["replace", "reject"] = "replace"


class GenerateResponse(BaseModel):
    """Generated text and how long it took."""

    text: str
    generated_tokens: int
    latency_ms: float
    ms_per_token: float
    unknown_characters: int
    release: str


class Health(BaseModel):
    """Liveness: the process answers; `release` is None until the first release is loaded."""

    status: Literal["ok"] = "ok"
    release: str | None


class Readiness(BaseModel):
    """The release loaded: its version, its model's sha256, the context length and vocabulary size."""

    ready: Literal[True] = True
    release: str
    model_sha256: str
    block_size: int
    vocab_size: int


class Message(BaseModel):
    """A chat message: who speaks (`role`, and optionally the speaker's `name`) and what they say."""

    model_config = STRICT

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_PROMPT_CHARACTERS), AfterValidator(text_or_error)]
    name: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(text_or_error)] | None = None


#: A conversation: 1 to 64 messages.
Messages = Annotated[list[Message], Field(min_length=1, max_length=64)]


class TokenizeRequest(BaseModel):
    """vLLM's `/tokenize`: a `prompt`, or chat `messages` rendered with the release's chat template (exactly one of
    the two). The model has no special tokens: `add_special_tokens` changes nothing."""

    model_config = STRICT | ConfigDict(
        json_schema_extra={
            "examples": [{"prompt": "ROMEO:\n"}],
            "oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
        }
    )

    model: str | None = None
    prompt: Text = Field(default=None, description="the text (or give `messages`)")
    messages: Messages = Field(default=None, description="a conversation for the chat template (or give `prompt`)")
    add_generation_prompt: bool = True
    add_special_tokens: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class TokenizeResponse(BaseModel):
    """The ids, how many, and the context length (`max_model_len`: longer prompts are cropped to their end)."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    """vLLM's `/detokenize`: token ids (each below the vocabulary size: `/tokenizer_info` says it, and so does this
    document's `maximum` while a release is served) back to text."""

    model_config = STRICT | ConfigDict(json_schema_extra={"examples": [{"tokens": [1, 2, 3]}]})

    model: str | None = None
    tokens: Annotated[list[whole(0)], Field(max_length=MAX_PROMPT_CHARACTERS)]


class DetokenizeResponse(BaseModel):
    """The text of the ids."""

    prompt: str


class TokenizerInfo(BaseModel):
    """vLLM's `GET /tokenizer_info`: the tokenizer's configuration, as a Hugging Face `tokenizer_config.json` holds
    it. A character model has no beginning-, end- or padding token (they are null); each character is one token, and
    id 0, `unk_token`, stands for every character outside the vocabulary."""

    tokenizer_class: Literal["CharTokenizer"] = "CharTokenizer"
    chat_template: str
    model_max_length: int = Field(description="the context length (vLLM's max_model_len)")
    vocab_size: int
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str
    add_bos_token: bool = False
    add_eos_token: bool = False
    clean_up_tokenization_spaces: bool = False
