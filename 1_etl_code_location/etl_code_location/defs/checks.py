"""Data-quality checks of the ETL outputs. Blocking: a failure stops everything downstream."""

import itertools
import math

import dagster as dg

from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY, SPLITS
from etl_code_location.defs.vocabulary import characters
from shared_code_location import settings
from shared_code_location.contract.asset_keys import VOCABULARY
from shared_code_location.contract.corpus_files import CORPUS_FILES
from shared_code_location.model.tokenizer import CharTokenizer

#: How many missing characters a failed coverage check names, most frequent first.
_NAMED = 10


@dg.asset_check(asset=FILE_TOKENS_KEY, blocking=True, partitions_def=CORPUS_FILES)
def splits_do_not_overlap(file_tokens: dict) -> dg.AssetCheckResult:
    """Within the file, the splits are disjoint, contiguous, in train → validation → test order, cover it once, and
    their shards and character counts hold exactly their tokens."""
    splits = file_tokens["splits"]
    offsets = [(splits[split]["start"], splits[split]["end"]) for split in SPLITS]
    contiguous = offsets[0][0] == 0 and offsets[-1][1] == file_tokens["characters"]
    contiguous = contiguous and all(a[1] == b[0] for a, b in itertools.pairwise(offsets))
    ordered = all(start <= end for start, end in offsets)
    sizes = {split: splits[split]["end"] - splits[split]["start"] for split in SPLITS}
    held = all(
        sum(shard["tokens"] for shard in splits[split]["shards"]) == sizes[split] == sum(splits[split]["counts"])
        for split in SPLITS
    )
    return dg.AssetCheckResult(
        passed=contiguous and ordered and held,
        metadata={"offsets": dg.MetadataValue.json(dict(zip(SPLITS, offsets, strict=True)))},
    )


@dg.asset_check(asset=VOCABULARY.key, additional_ins={"file_tokens": dg.AssetIn(key=FILE_TOKENS_KEY)}, blocking=True)
def splits_are_non_empty(file_tokens: dict[str, dict]) -> dg.AssetCheckResult:
    """Every split holds text, over the whole corpus (a small file may have no held-out text of its own)."""
    sizes = {split: sum(s["splits"][split]["end"] - s["splits"][split]["start"] for s in file_tokens.values())
             for split in SPLITS}  # fmt: skip
    return dg.AssetCheckResult(passed=all(sizes.values()), metadata=sizes)


def max_held_out_oov_rate() -> float:
    """`ML_PIPELINE_MAX_HELD_OUT_OOV_RATE`, checked: a fraction between 0 and 1."""
    value = settings.MAX_HELD_OUT_OOV_RATE.get()
    try:
        rate = float(value or "")
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 1:
        raise ValueError(f"{settings.MAX_HELD_OUT_OOV_RATE.name}={value!r} is not a fraction between 0 and 1")
    return rate


@dg.asset_check(asset=VOCABULARY.key, additional_ins={"file_tokens": dg.AssetIn(key=FILE_TOKENS_KEY)}, blocking=True)
def vocabulary_covers_held_out_splits(vocabulary: dict, file_tokens: dict[str, dict]) -> dg.AssetCheckResult:
    """The train vocabulary covers the validation and test text: the share of their characters it lacks is at most
    `ML_PIPELINE_MAX_HELD_OUT_OOV_RATE` (0.1% by default). A failure names each missing character, how often it
    occurs and where first (file, line, character offset)."""
    limit = max_held_out_oov_rate()
    known = set(CharTokenizer.from_json(vocabulary).symbols)
    rates, missing = {}, {}
    for split in ("validation", "test"):
        counts = characters(file_tokens, split)
        gaps = {symbol: count for symbol, count in counts.items() if symbol not in known}
        rates[f"{split}_oov_rate"] = sum(gaps.values()) / max(sum(counts.values()), 1)
        for symbol, count in gaps.items():
            where = _first_position(file_tokens, split, symbol)
            total, first = missing.get(symbol, (0, where))
            missing[symbol] = (total + count, min(first, where))
    named = sorted(missing.items(), key=lambda item: -item[1][0])
    described = "; ".join(
        f"{symbol!r} ×{count:,} (first: {file} line {line:,}, character {offset:,})"
        for symbol, (count, (file, offset, line)) in named[:_NAMED]
    ) + (f"; and {len(named) - _NAMED} more" if len(named) > _NAMED else "")
    passed = all(rate <= limit for rate in rates.values())
    return dg.AssetCheckResult(
        passed=passed,
        description=None if passed else f"held-out characters the train vocabulary lacks: {described}",
        metadata={"missing": described or "none", **rates, "limit": limit},
    )


def _first_position(file_tokens: dict[str, dict], split: str, symbol: str) -> tuple[str, int, int]:
    """(file, character offset, line) where `symbol` first occurs in `split`, files in name order."""
    for name in sorted(file_tokens):
        summary = file_tokens[name]
        if symbol in summary["symbols"]:
            first = summary["splits"][split]["first"][summary["symbols"].index(symbol)]
            if first is not None:
                return name, first[0], first[1]
    raise LookupError(symbol)
