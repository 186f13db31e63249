"""The model's metrics on a token stream, and samples. Imports torch: import only inside asset bodies."""

import math

import numpy as np
import torch

from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.model.tokenizer import CharTokenizer
from shared_code_location.model.transformer import DecoderTransformer, window_metrics

#: Fixed prompts and seed: the same model always writes the same samples, so runs compare.
SAMPLE_PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING HENRY VI:\nO")
SAMPLE_SEED = 1337


def language_model_metrics(model: DecoderTransformer, tokens: TokenShards | np.ndarray) -> dict[str, float]:
    """Loss (nats/token), perplexity, bits per character and next-token accuracy over consecutive windows: the
    model's own `window_metrics`, the same that training's validation loss uses, streamed shard by shard."""
    metrics = window_metrics(model, tokens)
    return metrics | {"perplexity": math.exp(metrics["loss"]), "bits_per_character": metrics["loss"] / math.log(2)}


def generate_samples(
    model: DecoderTransformer, tokenizer: CharTokenizer, max_new_tokens: int = 200, temperature: float = 0.8
) -> list[dict[str, str]]:
    """One continuation per fixed prompt, sampled with a fixed seed."""
    samples = []
    for prompt in SAMPLE_PROMPTS:
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        idx = torch.from_numpy(tokenizer.encode(prompt).astype(np.int64))[None, :]
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=None, generator=generator)
        samples.append({"prompt": prompt, "completion": tokenizer.decode(out[0, idx.shape[1] :].tolist())})
    return samples
