"""Count-based baselines from the train split: what the transformer must beat to be worth shipping."""

import math

import numpy as np


def _summary(log_probs: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    loss = float(-log_probs.mean())
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": loss / math.log(2),
        "accuracy": float(correct.mean()),
    }


def unigram_baseline(train: np.ndarray, test: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Next token ~ its train frequency (add-one smoothed); predicts the most frequent token."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    targets = test[1:].astype(np.int64)
    return _summary(log_p[targets], targets == int(np.argmax(counts)))


def bigram_baseline(train: np.ndarray, test: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Next token ~ its train frequency after the current token (add-one smoothed)."""
    train = train.astype(np.int64)
    counts = np.ones((vocab_size, vocab_size), dtype=np.float64)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    previous, targets = test[:-1].astype(np.int64), test[1:].astype(np.int64)
    return _summary(log_p[previous, targets], counts.argmax(axis=1)[previous] == targets)
