"""The sampling controls of OpenAI and vLLM, through the official `openai` client, each for its effect: logit bias,
the presence, frequency and repetition penalties (against their definitions, token by token), top-k, min-p and
min-tokens; the batch's one NumPy pass picks what each row picks alone; a seeded request with every control gives
the same text alone and among others."""

import json
import threading

import numpy as np
import openai
import pytest

from conftest import call
from deploy_code_location.onnx_generator import OnnxGenerator
from deploy_code_location.release_store import resolve_release
from deploy_code_location.sampling import SamplingParams, sample_rows
from deploy_code_location.structured_output import Constraint

MODEL = "char-transformer"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture
def generator(server, release_dir) -> OnnxGenerator:
    """The release the server serves now (other tests swap it)."""
    return OnnxGenerator(resolve_release(release_dir, call(server, "/health")[1]["release"]))


def _text(client: openai.OpenAI, **fields) -> str:
    return client.completions.create(model=MODEL, **({"prompt": "ROMEO", "max_tokens": 40} | fields)).choices[0].text


def test_logit_bias_bans_a_character_or_forces_it(client, generator):
    plain = _text(client, max_tokens=80, seed=4, temperature=1.5)
    common = max(set(plain), key=plain.count)
    banned_id, forced_id = (int(generator.tokenizer.encode(c)[0]) for c in (common, "w"))
    banned = _text(client, max_tokens=80, seed=4, temperature=1.5, logit_bias={str(banned_id): -100})
    assert plain.count(common) >= 3 and common not in banned and len(banned) == 80
    assert _text(client, max_tokens=30, seed=4, temperature=1.5, logit_bias={str(forced_id): 100}) == "w" * 30


def _greedy_reference(generator: OnnxGenerator, prompt: str, steps: int, penalize) -> str:
    """Greedy decoding with `penalize(logits, prompt_ids, output_ids)` applied before each pick, the context
    recomputed every token (within one block: no sliding)."""
    ids = generator.tokenizer.encode(prompt).astype(np.int64).tolist()
    prompt_ids, output = list(ids), []
    for _ in range(steps):
        logits = generator.next_token_logits(np.array(ids)).astype(np.float64)
        logits[0] = -np.inf
        token = int(np.argmax(penalize(logits, prompt_ids, output)))
        ids.append(token)
        output.append(token)
    return generator.tokenizer.decode(output)


def _presence(logits, _prompt, output):
    return logits - 1.5 * (np.bincount(output, minlength=len(logits)) > 0)


def _frequency(logits, _prompt, output):
    return logits - 0.8 * np.bincount(output, minlength=len(logits))


def _repetition(logits, prompt, output):
    seen = np.bincount(prompt + output, minlength=len(logits)) > 0
    return np.where(seen, np.where(logits > 0, logits / 1.8, logits * 1.8), logits)


@pytest.mark.parametrize(
    ("control", "penalize"),
    [({"presence_penalty": 1.5}, _presence), ({"frequency_penalty": 0.8}, _frequency),
     ({"extra_body": {"repetition_penalty": 1.8}}, _repetition)],
)  # fmt: skip
def test_each_penalty_follows_its_definition_token_by_token(client, generator, control, penalize):
    plain = _text(client, prompt="a", max_tokens=12, temperature=0)
    penalized = _text(client, prompt="a", max_tokens=12, temperature=0, **control)
    assert len(set(plain)) < len(plain)  # greedy repeats itself: something to penalize
    assert penalized == _greedy_reference(generator, "a", 12, penalize) != plain


def _chosen_and_top(choice) -> list[tuple[float, list[float]]]:
    """Each token's log-probability and the likeliest ones' (the unknown symbol left out: it is never sampled)."""
    logprobs = choice.logprobs
    return [
        (lp, sorted((v for k, v in top.items() if k != "\ufffd"), reverse=True))
        for lp, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True)
    ]


def test_top_k_keeps_only_the_likeliest_tokens(client):
    fields = {"prompt": "ROMEO", "max_tokens": 60, "temperature": 1.0, "seed": 9, "logprobs": 5}
    plain = _chosen_and_top(client.completions.create(model=MODEL, **fields).choices[0])
    top_k = _chosen_and_top(client.completions.create(model=MODEL, **fields, extra_body={"top_k": 2}).choices[0])
    # Logprobs are the model's own (temperature 1, as sampled here): the chosen token's rank shows in them.
    assert any(lp < top[1] for lp, top in plain) and all(lp >= top[1] for lp, top in top_k)


def test_min_p_drops_what_is_far_less_likely_than_the_likeliest(client, generator):
    """The untrained model's distribution is nearly flat (every logit within about 0.3 of the best): a +3 bias makes
    one character about 20 times likelier than any other, so min_p 0.2 keeps it alone."""
    y = str(int(generator.tokenizer.encode("y")[0]))
    fields = {"max_tokens": 60, "seed": 9, "logit_bias": {y: 3}}
    assert set(_text(client, **fields)) != {"y"}
    assert _text(client, **fields, extra_body={"min_p": 0.2}) == "y" * 60
    assert set(_text(client, **fields, extra_body={"min_p": 0.01})) != {"y"}


def test_min_tokens_holds_stop_strings_back(client):
    """As vLLM's: no stop string counts until `min_tokens` tokens were generated (the stop string's own included)."""
    greedy = _text(client, prompt="But", max_tokens=60, temperature=0)
    stop = next(greedy[i : i + 2] for i in range(5) if greedy.find(greedy[i : i + 2], i + 9) > 0)
    first = greedy.index(stop)
    assert _text(client, prompt="But", max_tokens=60, temperature=0, stop=stop) == greedy[:first]
    held = _text(client, prompt="But", max_tokens=60, temperature=0, stop=stop, extra_body={"min_tokens": first + 10})
    assert held == greedy[: greedy.index(stop, first + 8)]  # the first stop string that ends at token 10 or later
    with pytest.raises(openai.BadRequestError) as error:
        _text(client, max_tokens=5, extra_body={"min_tokens": 6})
    assert error.value.body["param"] == "min_tokens"


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"presence_penalty": 2.5}, "presence_penalty"), ({"frequency_penalty": -3}, "frequency_penalty"),
     ({"logit_bias": {"1": 101}}, "logit_bias"), ({"logit_bias": {"one": 1}}, "logit_bias"),
     ({"logit_bias": {"9999": 1}}, "logit_bias"), ({"top_k": -2}, "top_k"), ({"min_p": 1.5}, "min_p"),
     ({"repetition_penalty": 0}, "repetition_penalty"), ({"min_tokens": -1}, "min_tokens")],
)  # fmt: skip
def test_out_of_range_controls_are_named(server, fields, param):
    body = {"model": MODEL, "prompt": "a", "max_tokens": 3} | fields
    status, answer = call(server, "/v1/completions", json.dumps(body).encode())
    assert status == 400 and answer["error"]["param"] == param, answer


def test_the_batched_pass_picks_what_each_row_picks_alone(generator):
    """One NumPy pass over rows with different controls gives each row what its sampler gives it alone."""
    rng = np.random.default_rng(0)
    vocab = generator.tokenizer.vocab_size
    prompt = generator.tokenizer.encode("ROMEO").tolist()
    grammar = Constraint("regex", "[a-z]+[0-9]*").compile(generator.tokenizer)
    settings = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.3, top_k=3, seed=1),
        SamplingParams(temperature=0.9, top_p=0.6, min_p=0.1, seed=2),
        SamplingParams(
            presence_penalty=1.0, frequency_penalty=0.5, repetition_penalty=1.4, logit_bias={5: 3.0}, seed=3
        ),
        SamplingParams(temperature=1.1, logit_bias={3: -100.0}, top_k=5, seed=4),
        SamplingParams(temperature=1.0, min_tokens=4, seed=5),  # with the grammar below
    ]

    def samplers():
        return [p.sampler(i, prompt, vocab, grammar if i == 5 else None) for i, p in enumerate(settings)]

    batched, alone = samplers(), samplers()
    for _ in range(30):
        logits = rng.normal(0, 3, size=(len(settings), vocab)).astype(np.float32)
        together = sample_rows(logits, batched).tolist()
        assert together == [sampler(row) for sampler, row in zip(alone, logits, strict=True)]


def test_a_seeded_request_with_every_control_is_the_same_alone_and_among_others(server):
    controlled = {
        "model": MODEL, "prompt": "ROMEO:\n", "max_tokens": 40, "temperature": 1.2, "seed": 21, "top_p": 0.9,
        "presence_penalty": 0.6, "frequency_penalty": 0.4, "logit_bias": {"2": 4.0, "5": -100}, "top_k": 12,
        "min_p": 0.02, "repetition_penalty": 1.3, "n": 2,
    }  # fmt: skip
    structured = controlled | {"structured_outputs": {"regex": "[a-z ]+[.?]"}, "n": 1}
    others = [{"model": MODEL, "prompt": p, "max_tokens": 40, "seed": i} for i, p in enumerate(["a", "But", "0"] * 3)]

    def ask(body: dict) -> list[str]:
        status, answer = call(server, "/v1/completions", json.dumps(body).encode())
        assert status == 200, answer
        return [choice["text"] for choice in answer["choices"]]

    alone = [ask(controlled), ask(structured)]
    results: dict[int, list[str]] = {}
    bodies = [controlled, structured, *others]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(bodies[i]))) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[0], results[1]] == alone
    assert alone[0][0] != alone[0][1]  # choice i samples with seed + i
