"""Structured output: text constrained by a regex, a choice of strings, a JSON schema or a grammar, with llguidance
(the Rust matcher behind vLLM's `guidance` backend: no torch, no other dependency, regex, JSON schema and Lark/GBNF
grammars alike).

A character model's vocabulary is the easiest case for a grammar mask: every token is one character, so each step
of the matcher is one step of its automaton. The vocabulary is handed to llguidance as it is (each character's
UTF-8 bytes), the unknown symbol as a special token the grammar never allows, and one token more: the end of the
text, allowed once the text so far matches (`sampling` turns it into the row's choice to stop).

`Constraint.compile` checks a request's constraint against the release's vocabulary (a bad regex or schema, or a
grammar that cannot start with any character the model has, is a `GrammarError` naming the problem);
`Grammar.matcher()` gives each choice its own matcher; `allowed_tokens` computes the masks of a batch's rows in one
call.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shared_code_location.model.tokenizer import UNKNOWN_ID, CharTokenizer

#: The kinds of constraint, as vLLM's `structured_outputs` names them (`json_object`: any JSON object).
Kind = Literal["regex", "choice", "json", "grammar", "json_object"]


class GrammarError(ValueError):
    """A constraint that cannot be used: the message says why."""


class _CharVocabulary:
    """What llguidance's `TokenizerWrapper` reads: each id's bytes, the end token (one past the vocabulary), the
    special ids, and how to tokenize text (one id per character)."""

    def __init__(self, tokenizer: CharTokenizer):
        self.eos_token_id, self.bos_token_id = tokenizer.vocab_size, None
        self.tokens = [symbol.encode("utf-8") for symbol in tokenizer.symbols] + [b"\xff[END]"]
        self.tokens[UNKNOWN_ID] = b"\xff[UNKNOWN]"
        self.special_token_ids = [UNKNOWN_ID, tokenizer.vocab_size]
        self._encode = tokenizer.encode

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):  # llguidance hands UTF-8
            text = text.decode("utf-8", errors="replace")
        return self._encode(text).tolist()


@functools.lru_cache(maxsize=8)
def _lltokenizer(tokenizer: CharTokenizer):
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_CharVocabulary(tokenizer)), slices=[])


@functools.lru_cache(maxsize=1)
def _executor():
    import llguidance

    return llguidance.LLExecutor()


def _closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that does not say (vLLM's
    `disable_additional_properties`)."""
    if isinstance(schema, dict):
        closed = {key: _closed_objects(value) for key, value in schema.items()}
        if (schema.get("type") == "object" or "properties" in schema) and "additionalProperties" not in schema:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed_objects(value) for value in schema]
    return schema


@dataclass(frozen=True)
class Constraint:
    """What a request asks its text to match, before it meets a vocabulary: `kind` and its `value` (a regex, a list
    of strings, a JSON schema, a Lark or GBNF grammar). JSON has no whitespace between its tokens unless
    `any_whitespace` (then `whitespace_pattern`, if given, says which); `closed_objects` forbids properties a schema
    does not name."""

    kind: Kind
    value: Any
    any_whitespace: bool = False
    closed_objects: bool = False
    whitespace_pattern: str | None = None

    def source(self) -> str:
        """llguidance's grammar for this constraint; a `GrammarError` if it cannot make one."""
        import llguidance

        if self.kind in ("json", "json_object"):
            schema = {"type": "object"} if self.kind == "json_object" else self.value
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError as error:
                    raise GrammarError(f"the JSON schema is not JSON: {error}") from None
            if not isinstance(schema, dict | bool):
                raise GrammarError("a JSON schema is an object (or true or false)")
            if self.closed_objects:
                schema = _closed_objects(schema)
            options: dict[str, Any] = {"whitespace_flexible": self.any_whitespace}
            if self.whitespace_pattern is not None:
                options["whitespace_pattern"] = self.whitespace_pattern
            try:
                return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options)
            except ValueError as error:
                raise GrammarError(f"the JSON schema cannot be used: {error}") from None
        if self.kind == "choice":
            if not self.value or not all(isinstance(item, str) and item for item in self.value):
                raise GrammarError("a choice is a list of one or more non-empty strings")
            return llguidance.grammar_from("choice", list(self.value))
        try:
            return llguidance.grammar_from("regex" if self.kind == "regex" else "grammar", self.value)
        except ValueError as error:
            raise GrammarError(str(error)) from None

    def compile(self, tokenizer: CharTokenizer) -> Grammar:
        """The constraint for a release's vocabulary, checked: a `GrammarError` if llguidance refuses it, or if no
        character of the vocabulary can start a matching text. The last 64 compiled are kept: a grammar sent again
        (an application's one schema) costs nothing the second time."""
        fields = [self.kind, self.value, self.any_whitespace, self.closed_objects, self.whitespace_pattern]
        return _compiled(json.dumps(fields, sort_keys=True), tokenizer)


@functools.lru_cache(maxsize=64)
def _compiled(fields: str, tokenizer: CharTokenizer) -> Grammar:
    import llguidance

    constraint = Constraint(*json.loads(fields))
    source, lltokenizer = constraint.source(), _lltokenizer(tokenizer)
    matcher = llguidance.LLMatcher(lltokenizer, source, log_level=0)
    if matcher.is_error():
        raise GrammarError(f"the {constraint.kind} cannot be used: {_one_line(matcher.get_error())}")
    if not allowed_tokens([matcher], tokenizer.vocab_size)[0].any():
        raise GrammarError(
            f"no text the model can write matches this {constraint.kind}: it needs characters outside the vocabulary"
        )
    return Grammar(constraint, source, matcher.deep_copy())


@dataclass(frozen=True)
class Grammar:
    """A constraint compiled for one vocabulary: `matcher()` starts a text, as a copy of a matcher at its start
    (a copy takes microseconds where building one from the grammar takes a millisecond)."""

    constraint: Constraint
    source: str
    start: Any

    def matcher(self):
        """A new matcher at the start of the text (one per choice: each keeps its own state)."""
        return self.start.deep_copy()


def allowed_tokens(matchers: list, vocab_size: int) -> np.ndarray:
    """[len(matchers), vocab_size + 1] booleans: which ids each matcher allows next, the last column its end. Never
    the unknown symbol; nothing at all from a matcher at a dead end (llguidance then allows only the end, in an
    error state: the grammar needs a token the vocabulary does not have)."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask_par

    bitmask = allocate_token_bitmask(len(matchers), vocab_size + 1)
    fill_next_token_bitmask_par(_executor(), [(matcher, row) for row, matcher in enumerate(matchers)], bitmask)
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
    allowed = bits[:, : vocab_size + 1].astype(bool)
    allowed[:, UNKNOWN_ID] = False
    for row, matcher in enumerate(matchers):
        if matcher.is_error():
            allowed[row] = False
    return allowed


def _one_line(message: str, limit: int = 300) -> str:
    """llguidance's error (several lines, with a caret under the place) on one line."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip()) or "unknown error"
    return text if len(text) <= limit else text[: limit - 1] + "…"
