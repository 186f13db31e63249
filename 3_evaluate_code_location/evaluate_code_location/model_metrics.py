"""The model's metrics on a token stream, and samples. Imports torch: import only inside asset bodies."""

import math

import numpy as np
import torch
from torch.nn import functional as F

from shared_code_location.tokenizer import CharTokenizer
from shared_code_location.transformer import DecoderTransformer

#: Fixed prompts and seed: the same model always writes the same samples, so runs compare.
SAMPLE_PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING HENRY VI:\nO")
SAMPLE_SEED = 1337


@torch.no_grad()
def language_model_metrics(model: DecoderTransformer, tokens: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Loss (nats/token), perplexity, bits per character and next-token accuracy over consecutive windows."""
    block = model.config.block_size
    stream = torch.from_numpy(tokens.astype(np.int64))
    usable = (stream.numel() - 1) // block * block
    if usable <= 0:
        raise ValueError(f"{stream.numel()} test tokens cannot fill one window of {block + 1}")
    inputs, targets = stream[:usable].view(-1, block), stream[1 : usable + 1].view(-1, block)
    total_loss, correct = 0.0, 0
    for start in range(0, inputs.shape[0], batch_size):
        logits = model(inputs[start : start + batch_size])
        y = targets[start : start + batch_size]
        total_loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
    loss = total_loss / usable
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": loss / math.log(2),
        "accuracy": correct / usable,
        "tokens": usable,
    }


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
