"""Log-probabilities, echo and scoring, chat completions on the release's chat template, models.retrieve, and vLLM's
tokenize/detokenize, through the official `openai` client where it has the call."""

import json
import math

import numpy as np
import openai
import pytest

from conftest import call
from deploy_code_location.chat_template import ChatTemplate, default_template
from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import resolve_release

MODEL = "char-transformer"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture
def generator(server, release_dir) -> OnnxGenerator:
    """The release the server serves now (other tests swap it)."""
    return OnnxGenerator(resolve_release(release_dir, call(server, "/health")[1]["release"]))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_prompt_logits_equal_a_forward_pass_within_a_block_and_slide_past_it(generator):
    ids = generator.tokenizer.encode("ROMEO:\nBut soft, what light through yonder window breaks?").astype(np.int64)
    block, half = generator.block_size, generator.context_after_slide
    logits = generator.prompt_logits(ids)
    assert logits.shape == (len(ids) - 1, generator.tokenizer.vocab_size)
    np.testing.assert_allclose(logits[:block], generator.prefill_all(ids[:block])[0], atol=1e-5)
    # Past the block, each id is predicted from between half a block and a full block before it.
    for target in range(block + 1, len(ids)):
        start = ((target - 1 - block) // half + 1) * half
        assert half <= target - start <= block
        expected = generator.next_token_logits(ids[start:target])
        np.testing.assert_allclose(logits[target - 1], expected, atol=1e-5)


def test_echo_with_max_tokens_0_scores_the_text(client, generator):
    text = "ROMEO:\nBut soft"
    choice = client.completions.create(model=MODEL, prompt=text, echo=True, max_tokens=0, logprobs=3).choices[0]
    logprobs = choice.logprobs
    assert choice.text == text and logprobs.tokens == list(text)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.text_offset == list(range(len(text)))
    ids = generator.tokenizer.encode(text).astype(np.int64)
    expected = [_log_softmax(generator.next_token_logits(ids[:i]))[ids[i]] for i in range(1, len(ids))]
    np.testing.assert_allclose(logprobs.token_logprobs[1:], expected, atol=1e-5)
    for chosen, top in zip(text[1:], logprobs.top_logprobs[1:], strict=True):
        assert chosen in top and 3 <= len(top) <= 4  # the 3 likeliest, and the actual token
        assert all(value <= 0 for value in top.values())


def test_generated_tokens_carry_their_logprobs_and_offsets_after_the_prompt(client):
    first = client.completions.create(model=MODEL, prompt="ROMEO", max_tokens=12, logprobs=2, temperature=0)
    choice = first.choices[0]
    assert choice.logprobs.tokens == list(choice.text) and len(choice.text) == 12
    assert choice.logprobs.text_offset == list(range(5, 17))  # offsets in prompt + completion, as OpenAI's
    logprobs = choice.logprobs
    for token, logprob, top in zip(choice.text, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert top[token] == logprob and logprob == max(top.values())  # greedy picks the likeliest
    echoed = client.completions.create(model=MODEL, prompt="ROMEO", max_tokens=12, logprobs=2, temperature=0, echo=True)
    assert echoed.choices[0].text == "ROMEO" + choice.text
    assert echoed.choices[0].logprobs.token_logprobs[5:] == choice.logprobs.token_logprobs


def test_streamed_logprobs_add_up_to_the_unstreamed_ones(client):
    kwargs = {"model": MODEL, "prompt": "JULIET:\n", "max_tokens": 30, "logprobs": 1, "seed": 5, "echo": True}
    whole = client.completions.create(**kwargs).choices[0]
    chunks = list(client.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    logprobs = [
        lp for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.token_logprobs
    ]
    offsets = [o for c in chunks if c.choices and c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert text == whole.text and logprobs == whole.logprobs.token_logprobs
    assert offsets == list(range(len(whole.text)))


def test_a_stop_string_drops_its_logprobs_with_its_text(client):
    greedy = client.completions.create(model=MODEL, prompt="ROMEO", max_tokens=40, temperature=0).choices[0].text
    stop = greedy[6:8]
    choice = client.completions.create(
        model=MODEL, prompt="ROMEO", max_tokens=40, temperature=0, stop=stop, logprobs=0
    ).choices[0]
    assert choice.text == greedy[: greedy.index(stop)]
    assert len(choice.logprobs.tokens) == len(choice.text) == len(choice.logprobs.token_logprobs)


def test_max_tokens_0_without_echo_is_refused(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt="a", max_tokens=0)
    assert error.value.body["param"] == "max_tokens"


def test_models_retrieve_and_an_unknown_model(client):
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-5")
    assert error.value.body["code"] == "model_not_found"


def test_the_default_chat_template_writes_a_plays_speaker_turns():
    template = ChatTemplate(default_template())
    messages = [
        {"role": "system", "content": "Verona. A street."},
        {"role": "user", "content": "Good morrow, cousin.\n"},
        {"role": "assistant", "content": "Is the day so young?", "name": "BENVOLIO"},
        {"role": "user", "content": "But new struck nine."},
    ]
    assert template.render(messages) == (
        "Verona. A street.\n\nROMEO:\nGood morrow, cousin.\n\nBENVOLIO:\nIs the day so young?\n\n"
        "ROMEO:\nBut new struck nine.\n\nJULIET:\n"
    )
    assert template.render(messages[:2], add_generation_prompt=False).endswith("cousin.\n\n")


def test_chat_completions_continue_the_play_and_stop_at_the_turn_end(client, generator):
    messages = [{"role": "user", "content": "But soft, what light?"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=300, temperature=0, seed=1)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert "\n\n" not in choice.message.content
    # The same as a completion of the rendered prompt with the template's stop.
    prompt = generator.chat_template.render(messages)
    completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=300, temperature=0, stop="\n\n")
    assert choice.message.content == completion.choices[0].text
    assert choice.finish_reason == completion.choices[0].finish_reason
    assert reply.usage.prompt_tokens == len(prompt)


def test_chat_streaming_and_logprobs(client):
    messages = [{"role": "user", "content": "Speak."}]
    kwargs = {"model": MODEL, "messages": messages, "max_tokens": 40, "seed": 3, "n": 2}
    whole = client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    for index in range(2):
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].index == index]
        assert deltas[0].role == "assistant"
        assert "".join(d.content or "" for d in deltas) == whole.choices[index].message.content
        content = whole.choices[index].logprobs.content
        assert "".join(t.token for t in content) == whole.choices[index].message.content
        assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].choices == []


def test_chat_refuses_what_it_cannot_do(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}], top_logprobs=2)
    assert error.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a"}],
            tools=[{"type": "function", "function": {"name": "f"}}],
        )
    assert error.value.body["param"] == "tools" and error.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "a"}])
    assert error.value.body["param"] == "messages"


def test_tokenize_and_detokenize_in_vllms_shapes(server, generator):
    status, body = call(server, "/tokenize", json.dumps({"prompt": "ROMEO", "return_token_strs": True}).encode())
    assert status == 200 and body["count"] == 5 and body["token_strs"] == list("ROMEO")
    assert body["tokens"] == generator.tokenizer.encode("ROMEO").tolist()
    assert body["max_model_len"] == generator.block_size
    status, text = call(server, "/detokenize", json.dumps({"tokens": body["tokens"]}).encode())
    assert status == 200 and text == {"prompt": "ROMEO"}
    messages = [{"role": "user", "content": "Hi"}]
    status, chat = call(server, "/tokenize", json.dumps({"messages": messages}).encode())
    assert status == 200 and chat["count"] == len("ROMEO:\nHi\n\nJULIET:\n")
    status, error = call(server, "/detokenize", json.dumps({"tokens": [10_000]}).encode())
    assert status == 422 and "outside the vocabulary" in error["detail"][0]["msg"]
    status, error = call(server, "/tokenize", json.dumps({"prompt": "a", "messages": messages}).encode())
    assert status == 422 and "either prompt or messages" in error["detail"][0]["msg"]


def test_tokenizer_info_and_max_model_len_in_vllms_shapes(server, generator, client):
    """What lm-evaluation-harness's remote tokenizer reads: the tokenizer's configuration, the chat template it can
    render itself, no special tokens but the unknown symbol; and the context length in /v1/models."""
    status, info = call(server, "/tokenizer_info")
    assert status == 200 and info["tokenizer_class"] == "CharTokenizer"
    assert info["chat_template"] == generator.chat_template.source
    assert info["model_max_length"] == generator.block_size and info["vocab_size"] == generator.tokenizer.vocab_size
    assert (info["bos_token"], info["eos_token"], info["pad_token"], info["unk_token"]) == (None, None, None, "\ufffd")
    assert client.models.list().data[0].max_model_len == generator.block_size
    assert client.models.retrieve(MODEL).max_model_len == generator.block_size


def test_logprobs_are_log_probabilities(client):
    top = client.completions.create(model=MODEL, prompt="ROMEO", max_tokens=1, logprobs=5).choices[0]
    values = list(top.logprobs.top_logprobs[0].values())
    assert sum(math.exp(v) for v in values) <= 1 + 1e-9 and all(v <= 0 for v in values)
