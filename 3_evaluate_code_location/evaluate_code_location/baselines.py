"""Count-based baselines from the train split: what the transformer must beat to be worth shipping.

Both read the splits as streams of (previous, next) token pairs within each shard, a bounded piece at a time, so a
corpus larger than memory is counted without loading it whole.
"""

import math
from collections.abc import Iterator

import numpy as np

from shared_code_location.contract.token_shards import TokenShards

#: Tokens read at a time.
_PIECE = 1 << 24


def _pairs(tokens: TokenShards | np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(previous, next) int64 ids of every pair of consecutive tokens within a shard, piece by piece."""
    shards = tokens if isinstance(tokens, TokenShards) else TokenShards.from_array(np.asarray(tokens))
    for index, shard in enumerate(shards.shards):
        for start in range(0, max(shard.tokens - 1, 0), _PIECE):
            ids = shards.read(index, start, start + _PIECE + 1).astype(np.int64)
            yield ids[:-1], ids[1:]


def _summary(log_prob_sum: float, correct: int, count: int) -> dict[str, float]:
    loss = float(-log_prob_sum / count)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": loss / math.log(2),
        "accuracy": correct / count,
    }


def unigram_baseline(
    train: TokenShards | np.ndarray, test: TokenShards | np.ndarray, vocab_size: int
) -> dict[str, float]:
    """Next token ~ its train frequency (add-one smoothed); predicts the most frequent token."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    shards = train if isinstance(train, TokenShards) else TokenShards.from_array(np.asarray(train))
    for _, _, ids in shards.chunks(_PIECE):
        counts += np.bincount(ids, minlength=vocab_size)
    smoothed = counts.astype(np.float64) + 1.0
    log_p, best = np.log(smoothed / smoothed.sum()), int(np.argmax(smoothed))
    total, correct, count = 0.0, 0, 0
    for _, targets in _pairs(test):
        total += float(log_p[targets].sum())
        correct += int(np.count_nonzero(targets == best))
        count += len(targets)
    return _summary(total, correct, count)


def bigram_baseline(
    train: TokenShards | np.ndarray, test: TokenShards | np.ndarray, vocab_size: int
) -> dict[str, float]:
    """Next token ~ its train frequency after the current token (add-one smoothed)."""
    counts = np.zeros(vocab_size * vocab_size, dtype=np.int64)
    for previous, following in _pairs(train):
        counts += np.bincount(previous * vocab_size + following, minlength=vocab_size * vocab_size)
    smoothed = counts.reshape(vocab_size, vocab_size).astype(np.float64) + 1.0
    log_p, best = np.log(smoothed / smoothed.sum(axis=1, keepdims=True)), smoothed.argmax(axis=1)
    total, correct, count = 0.0, 0, 0
    for previous, targets in _pairs(test):
        total += float(log_p[previous, targets].sum())
        correct += int(np.count_nonzero(best[previous] == targets))
        count += len(targets)
    return _summary(total, correct, count)
