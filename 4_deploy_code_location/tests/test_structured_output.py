"""Structured output through the official `openai` client: `response_format` (JSON schema, JSON object) and vLLM's
`structured_outputs` in `extra_body` (regex, choice, JSON schema, grammar). The text matches when `finish_reason` is
"stop"; a grammar that cannot be completed within `max_tokens`, or that needs a character the vocabulary lacks,
says "length" and returns the unfinished match, never text that breaks it; bad constraints are 400s that say why.

The tiny test model is untrained: whatever it writes, the grammar alone makes it match."""

import json
import re

import jsonschema
import openai
import pytest

from conftest import call

MODEL = "char-transformer"
#: Keys of letters the tiny vocabulary has (it lacks "c", "m", "p", ...).
SCHEMA = {
    "type": "object",
    "properties": {
        "line": {"type": "integer", "minimum": 0, "maximum": 99},
        "word": {"type": "string", "maxLength": 6},
        "high": {"type": "boolean"},
    },
    "required": ["line", "word", "high"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def _complete(client, **fields):
    return client.completions.create(model=MODEL, **({"prompt": "ROMEO:\n", "max_tokens": 120} | fields)).choices


def test_response_format_json_schema_on_completions_and_chat(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "cue", "schema": SCHEMA, "strict": True}}
    for seed in (1, 2):  # the client's completions.create has no response_format argument: vLLM's, in extra_body
        (choice,) = _complete(client, seed=seed, extra_body={"response_format": response_format})
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.text), SCHEMA)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Thy cue?"}], max_tokens=120, seed=3,
        response_format=response_format,
    ).choices[0]  # fmt: skip
    assert reply.finish_reason == "stop"
    jsonschema.validate(json.loads(reply.message.content), SCHEMA)


def test_extra_body_regex_choice_json_and_grammar(client):
    regex = "(but|soft)-[0-9]{2,3}"
    for seed in (1, 2, 3):
        (choice,) = _complete(client, seed=seed, extra_body={"structured_outputs": {"regex": regex}})
        assert choice.finish_reason == "stop" and re.fullmatch(regex, choice.text), choice
    words = ["but soft", "window", "light"]
    picked = {_complete(client, seed=s, extra_body={"structured_outputs": {"choice": words}})[0].text for s in range(6)}
    assert picked <= set(words) and len(picked) >= 2
    (choice,) = _complete(client, seed=4, extra_body={"structured_outputs": {"json": SCHEMA}})
    jsonschema.validate(json.loads(choice.text), SCHEMA)
    lark = 'start: "a" /[bd]+/ "." NUMBER\nNUMBER: /[0-9]/'
    (choice,) = _complete(client, seed=5, extra_body={"structured_outputs": {"grammar": lark}})
    assert choice.finish_reason == "stop" and re.fullmatch(r"a[bd]+\.[0-9]", choice.text), choice


def _id(server: str, character: str) -> str:
    """The token id of `character`, as `logit_bias` keys are written."""
    return str(call(server, "/tokenize", json.dumps({"prompt": character}).encode())[1]["tokens"][0])


def test_a_complete_text_may_end_and_then_ends_as_the_model_prefers(client, server):
    """After "a", ["a", "ab"] may end or go on: it ends with the probability the model gives every character the
    grammar refuses there, so banning "b" ends it, and forcing "b" goes on."""
    choice = {"structured_outputs": {"choice": ["a", "ab"]}}
    assert _complete(client, seed=1, extra_body=choice, logit_bias={_id(server, "b"): -100})[0].text == "a"
    assert _complete(client, seed=1, extra_body=choice, logit_bias={_id(server, "b"): 100})[0].text == "ab"


def test_a_grammar_that_cannot_finish_says_length_and_returns_its_unfinished_match(client, server):
    (cut,) = _complete(client, seed=1, max_tokens=10, extra_body={"structured_outputs": {"regex": "[a-z]{30}"}})
    assert cut.finish_reason == "length" and re.fullmatch("[a-z]{10}", cut.text)
    # "act" needs a "c", which the vocabulary lacks: after "a" the grammar cannot go on.
    stuck = {"structured_outputs": {"choice": ["act", "but"]}}
    (dead,) = _complete(client, seed=1, extra_body=stuck, logit_bias={_id(server, "a"): 100})
    assert dead.finish_reason == "length" and dead.text == "a"
    (held,) = _complete(client, seed=2, extra_body={"structured_outputs": {"regex": "[a-z]+"}, "min_tokens": 8})
    assert len(held.text) >= 8 and re.fullmatch("[a-z]+", held.text)


def test_streamed_and_several_choices_match_too(client):
    fields = {"seed": 7, "n": 3, "extra_body": {"structured_outputs": {"json": SCHEMA}}}
    whole = _complete(client, **fields)
    streamed = ["", "", ""]
    reasons = {}
    for chunk in client.completions.create(model=MODEL, prompt="ROMEO:\n", max_tokens=120, stream=True, **fields):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert streamed == [c.text for c in whole] and reasons == {0: "stop", 1: "stop", 2: "stop"}
    for text in streamed:
        jsonschema.validate(json.loads(text), SCHEMA)
    assert len(set(streamed)) > 1


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"extra_body": {"structured_outputs": {"regex": "("}}}, "structured_outputs", "unclosed group"),
        ({"extra_body": {"structured_outputs": {"regex": "[XYZ]+"}}}, "structured_outputs", "outside the vocab"),
        ({"extra_body": {"structured_outputs": {"grammar": "start: x"}}}, "structured_outputs", "unknown name"),
        ({"extra_body": {"structured_outputs": {"regex": "a", "choice": ["b"]}}}, "structured_outputs", "exactly one"),
        ({"extra_body": {"response_format": {"type": "json_object"}}, "stop": "x"}, "stop", "stop cannot be combined"),
        ({"extra_body": {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}},
         "response_format", "not both"),
        ({"extra_body": {"guided_json": {"type": "object"}}}, "guided_json", "use structured_outputs.json"),
    ],
)  # fmt: skip
def test_a_constraint_that_cannot_be_used_is_a_400_that_says_why(client, fields, param, fragment):
    with pytest.raises(openai.BadRequestError) as error:
        _complete(client, **fields)
    assert error.value.body["param"] == param and fragment in error.value.body["message"], error.value.body
