"""Decoded choices as OpenAI's responses and stream chunks: log-probabilities in the legacy completions shape and in
the chat shape, usage, and server-sent events written as bytes.

Stream chunks are the hot path (one event per token and choice): each is built from a prefix made once per request
and `json.dumps` of the new text, not through pydantic, and every event of one decoding step goes out in one write.
A test checks that they equal the documented models' own JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from deploy_code_location.onnx_generator import TokenScores
from deploy_code_location.serving.openai_models import Usage
from deploy_code_location.serving.streams import DecodingJob

DONE = b"data: [DONE]\n\n"


def legacy_logprobs(
    text: str, scores: Sequence[TokenScores | None], offset: int, symbols: Sequence[str]
) -> dict[str, list]:
    """OpenAI's legacy `logprobs` for the characters of `text` (one token each) starting at character `offset` of
    prompt + completion; a None score (a prompt's first token) has no log-probability and no alternatives."""
    top: list[dict[str, float] | None] = []
    for character, score in zip(text, scores, strict=True):
        if score is None:
            top.append(None)
            continue
        alternatives = {symbols[i]: logprob for i, logprob in score.top}
        alternatives.setdefault(character, score.logprob)  # the chosen token is always among them, as OpenAI's
        top.append(alternatives)
    return {
        "tokens": list(text),
        "token_logprobs": [None if score is None else score.logprob for score in scores],
        "top_logprobs": top,
        "text_offset": list(range(offset, offset + len(text))),
    }


def chat_logprobs(text: str, scores: Sequence[TokenScores], symbols: Sequence[str]) -> dict[str, list]:
    """OpenAI's chat `logprobs`: per token its text, log-probability and UTF-8 bytes, and the likeliest others."""

    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            entry(character, score.logprob) | {"top_logprobs": [entry(symbols[i], lp) for i, lp in score.top]}
            for character, score in zip(text, scores, strict=True)
        ]
    }


def usage(job: DecodingJob, prompt_tokens: int) -> Usage:
    """Token counts: each prompt counted once, every choice's generated tokens."""
    completion = job.completion_tokens
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)


class ChunkWriter:
    """Writes one request's stream chunks: `{header..., "choices": [<choice>], "usage": ...}` as `data:` events."""

    def __init__(self, header: dict):
        self._prefix = b"data: " + json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()[:-1]

    def event(self, choice_json: str, usage_json: str = "null") -> bytes:
        """One event with one choice (already JSON)."""
        return b'%s,"choices":[%s],"usage":%s}\n\n' % (self._prefix, choice_json.encode(), usage_json.encode())

    def usage_event(self, counts: Usage) -> bytes:
        """The last event of `stream_options.include_usage`: no choices, the counts."""
        return b'%s,"choices":[],"usage":%s}\n\n' % (self._prefix, counts.model_dump_json().encode())


def dumps(value) -> str:
    """Compact JSON, as pydantic writes it (non-ASCII kept)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json_string(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: A str as a JSON string (C-accelerated, non-ASCII kept): the one call per token of a stream.
json_string = json.encoder.encode_basestring
