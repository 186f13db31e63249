import json

import numpy as np
import pytest

from conftest import TEXT, make_release, tiny_model
from deploy_code_location.onnx_export import export_onnx, max_logit_difference
from deploy_code_location.onnx_generator import (
    DecodeBatch,
    GenerationRequestError,
    OnnxGenerator,
    Sequence,
    sample_token,
)
from deploy_code_location.release_store import ReleaseNotFoundError, list_releases, resolve_release
from shared_code_location.model.tokenizer import CharTokenizer


def test_onnx_export_matches_pytorch_on_several_shapes():
    model = tiny_model()
    differences = max_logit_difference(model, export_onnx(model))
    assert set(differences) >= {"1x1", "1x16", "8x16", "decode_with_cache"}
    assert max(differences.values()) <= 1e-4


def test_release_is_immutable_and_latest_moves_only_when_told(tmp_path):
    make_release(tmp_path, "20260101T000000Z-11111111")
    with pytest.raises(FileExistsError):
        make_release(tmp_path, "20260101T000000Z-11111111")
    make_release(tmp_path, "20260102T000000Z-22222222", seed=1)
    assert list_releases(tmp_path) == ["20260101T000000Z-11111111", "20260102T000000Z-22222222"]
    assert resolve_release(tmp_path).name == "20260102T000000Z-22222222"
    assert resolve_release(tmp_path, "20260101T000000Z-11111111").name == "20260101T000000Z-11111111"
    assert not [p for p in (tmp_path / "releases").iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert json.loads((tmp_path / "latest.json").read_text())["version"] == "20260102T000000Z-22222222"


def test_no_release_is_a_clear_error(tmp_path):
    with pytest.raises(ReleaseNotFoundError, match=r"cli\.py run"):
        resolve_release(tmp_path)
    with pytest.raises(ReleaseNotFoundError, match="no release 'v9'"):
        resolve_release(tmp_path, "v9")


def test_generator_samples_reproducibly_and_crops_to_the_block(release_dir):
    generator = OnnxGenerator(resolve_release(release_dir))
    a = generator.generate("ROMEO:\n" * 10, max_new_tokens=40, seed=3)  # prompt longer than the block (16)
    b = generator.generate("ROMEO:\n" * 10, max_new_tokens=40, seed=3)
    assert a.text == b.text and len(a.text) == 40 and a.tokens == 40
    assert generator.generate("Zq", max_new_tokens=1, seed=0).unknown_characters == 2
    greedy_like = generator.generate("ROMEO", max_new_tokens=5, temperature=1e-4, top_k=1, seed=0)
    ids = generator.tokenizer.encode("ROMEO").astype(np.int64)
    assert greedy_like.text[0] == generator.tokenizer.decode([int(np.argmax(generator.next_token_logits(ids)))])
    for bad in ({"prompt": ""}, {"prompt": "a", "temperature": -1}, {"prompt": "a", "max_new_tokens": 0}):
        with pytest.raises(GenerationRequestError):
            generator.generate(**bad)


def test_cached_decoding_matches_recomputing_the_context_every_token(release_dir):
    """Each step's logits through the key/value cache equal a full forward pass over the context, where the
    context grows to the block size (16), then restarts from the latest half block (8)."""
    generator = OnnxGenerator(resolve_release(release_dir))
    prompt = generator.tokenizer.encode("ROMEO:\nBut").astype(np.int64)
    seen = []
    new_ids = generator.decode(prompt, 50, lambda logits: seen.append(logits) or int(np.argmax(logits[1:])) + 1)
    ids = np.concatenate([prompt, new_ids])
    assert len(seen) == 50  # one step per new token: the comparisons below run
    context, slides = len(prompt), 0
    for step, logits in enumerate(seen):
        end = len(prompt) + step
        np.testing.assert_allclose(logits, generator.next_token_logits(ids[end - context : end]), atol=1e-4)
        slides += context == generator.block_size
        context = generator.context_after_slide if context == generator.block_size else context + 1
    assert slides >= 2  # the context filled the block and restarted from its latest half, more than once


def test_a_release_without_the_cache_signature_is_a_clear_error(tmp_path):
    import torch

    model = tiny_model()
    program = torch.onnx.export(
        model, (torch.zeros((1, 4), dtype=torch.int64),), input_names=["input_ids"], dynamo=True
    )
    program.save(str(tmp_path / "model.onnx"))
    (tmp_path / "model_card.json").write_text(json.dumps({"version": "old", "model_config": model.config.to_json()}))
    (tmp_path / "vocabulary.json").write_text(json.dumps(CharTokenizer.fit(TEXT).to_json()))
    with pytest.raises(ValueError, match=r"predates the batched key/value-cache export.*--from 4_deploy --force"):
        OnnxGenerator(tmp_path)


def test_a_sequence_decodes_the_same_alone_and_in_a_batch_that_others_join_and_leave(release_dir):
    """Continuous batching: rows of different lengths (one longer than the block, so it slides) join at different
    steps and finish at different steps, and each row's ids equal decoding it alone with the same seed."""
    generator = OnnxGenerator(resolve_release(release_dir))
    prompts = ["ROMEO:\n", "But soft, what light through yonder window breaks?\n" * 2, "a", "window"]
    budgets = [40, 25, 60, 10]

    def sequence(index: int) -> Sequence:
        rng = np.random.default_rng(index)
        ids = generator.tokenizer.encode(prompts[index]).astype(np.int64)
        return Sequence(list(map(int, ids)), budgets[index], lambda logits: sample_token(logits, 0.9, None, rng))

    alone = []
    for index in range(len(prompts)):
        solo = sequence(index)
        alone.append(generator.decode(np.array(solo.tokens), solo.max_new_tokens, solo.choose).tolist())
    batch, together, joins = DecodeBatch(generator), {}, {0: [0, 1], 3: [2], 7: [3]}
    rows, step, widest = {}, 0, 0
    while step in joins or batch.rows or step < max(joins):
        for index in joins.get(step, []):
            rows[index] = sequence(index)
            batch.add(rows[index])
        if batch.rows:
            batch.advance()
            widest = max(widest, len(batch.rows))
        step += 1
    together = {index: s.tokens[s.prompt_length :] for index, s in rows.items()}
    assert widest == 4
    assert [together[index] for index in range(len(prompts))] == alone


def test_sampling_handles_extreme_temperatures_and_nucleus():
    rng = np.random.default_rng(0)
    logits = np.array([5.0, 1.0, 3.0, 2.9, -1.0])
    assert sample_token(logits, 0, None, rng) == 2  # greedy, never the unknown symbol (id 0)
    assert {sample_token(logits, 5e-324, None, rng) for _ in range(20)} == {2}  # no NaN probabilities
    assert {sample_token(logits, 1.0, None, rng, top_p=0.4) for _ in range(50)} == {2}  # p(2) = 0.49
    assert {sample_token(logits, 1.0, None, rng, top_p=0.9) for _ in range(200)} == {2, 3}
    assert {sample_token(logits, 100.0, 2, rng) for _ in range(200)} == {2, 3}


def test_the_latency_benchmark_runs_on_a_release(release_dir):
    from deploy_code_location.benchmark_latency import ort_ms_per_token

    figures = ort_ms_per_token(str(resolve_release(release_dir)), 20, "ROMEO:\n")
    assert figures["ms_per_token"] > 0 and figures["ms_per_decode_step_at_full_context"] > 0
