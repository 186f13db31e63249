"""Baselines, model metrics and the deployment gates, on real (small) models."""

import math

import dagster as dg
import numpy as np
import pytest
import torch

from evaluate_code_location.baselines import bigram_baseline, unigram_baseline
from evaluate_code_location.defs.checks import beats_bigram_baseline, metrics_are_finite
from evaluate_code_location.model_metrics import generate_samples, language_model_metrics
from shared_code_location.model.tokenizer import CharTokenizer
from shared_code_location.model.transformer import DecoderTransformer, TransformerConfig


def test_bigram_baseline_learns_a_deterministic_sequence():
    train = np.array([1, 2, 3] * 300, dtype=np.uint16)
    result = bigram_baseline(train, train[:90], vocab_size=4)
    assert result["accuracy"] == 1.0
    assert result["loss"] < unigram_baseline(train, train[:90], 4)["loss"]
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["bits_per_character"] == pytest.approx(result["loss"] / math.log(2))


def test_untrained_model_is_near_uniform_and_samples_are_reproducible():
    tokenizer = CharTokenizer.fit("ROMEO:\nFirst Citizen KING HENRY VI abc")
    torch.manual_seed(0)
    model = DecoderTransformer(
        TransformerConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=16)
    ).eval()
    tokens = np.random.default_rng(0).integers(0, tokenizer.vocab_size, 500).astype(np.uint16)
    metrics = language_model_metrics(model, tokens)
    assert abs(metrics["loss"] - math.log(tokenizer.vocab_size)) < 0.2
    assert metrics["tokens"] == 496
    first, second = generate_samples(model, tokenizer, 20), generate_samples(model, tokenizer, 20)
    assert first == second and len(first[0]["completion"]) == 20


def report(model_loss: float) -> dict:
    m = {"loss": model_loss, "perplexity": math.exp(model_loss), "bits_per_character": 1.0, "accuracy": 0.5}
    bigram = {"loss": 2.5, "perplexity": 12.2, "bits_per_character": 3.6, "accuracy": 0.27}
    return {"model": m, "baselines": {"bigram": bigram, "unigram": bigram}}


def test_gates_pass_a_good_model_and_block_a_bad_or_broken_one():
    context = dg.build_asset_check_context()
    assert beats_bigram_baseline(context, report(1.8)).passed
    assert not beats_bigram_baseline(context, report(2.6)).passed
    assert metrics_are_finite(context, report(1.8)).passed
    assert not metrics_are_finite(context, report(float("nan"))).passed


def test_a_failed_baseline_gate_names_the_experiment_and_what_to_change():
    context = dg.build_asset_check_context()
    trained = {"preset": "tiny", "max_iters": 300}
    failed = beats_bigram_baseline(context, report(3.38) | {"experiment": "licences", "hyperparameters": trained})
    assert not failed.passed and failed.metadata["experiment"].value == "licences"
    assert failed.description.startswith("experiment licences (tiny preset, 300 steps) predicts the test split")
    assert "a larger max_iters (now 300)" in failed.description and "--preset quick" in failed.description
    assert beats_bigram_baseline(context, report(1.8) | {"experiment": "licences"}).description is None
