"""Data-quality checks of the ETL outputs. Blocking: a failure stops everything downstream."""

import itertools

import dagster as dg

from etl_code_location.defs.split import TEXT_SPLITS_KEY
from shared_code_location.contract.asset_keys import VOCABULARY
from shared_code_location.model.tokenizer import CharTokenizer

#: Largest share of held-out characters the train vocabulary may miss before the split is judged unrepresentative.
MAX_HELD_OUT_OOV_RATE = 0.001


@dg.asset_check(asset=TEXT_SPLITS_KEY, blocking=True)
def splits_are_non_empty(text_splits: dict) -> dg.AssetCheckResult:
    """Every split holds text."""
    sizes = {name: len(text) for name, text in text_splits["splits"].items()}
    return dg.AssetCheckResult(passed=all(sizes.values()), metadata=sizes)


@dg.asset_check(asset=TEXT_SPLITS_KEY, blocking=True)
def splits_do_not_overlap(text_splits: dict) -> dg.AssetCheckResult:
    """The splits are disjoint, contiguous, in train → validation → test order, and cover the corpus once."""
    offsets = text_splits["offsets"]
    order = [offsets["train"], offsets["validation"], offsets["test"]]
    contiguous = order[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(order))
    ordered = all(start <= end for start, end in order)
    lengths_match = all(end - start == len(text_splits["splits"][name]) for name, (start, end) in offsets.items())
    return dg.AssetCheckResult(
        passed=contiguous and ordered and lengths_match,
        metadata={"offsets": dg.MetadataValue.json(offsets)},
    )


@dg.asset_check(
    asset=VOCABULARY.key,
    additional_ins={"text_splits": dg.AssetIn(key=TEXT_SPLITS_KEY)},
    blocking=True,
)
def vocabulary_covers_held_out_splits(vocabulary: dict, text_splits: dict) -> dg.AssetCheckResult:
    """The train vocabulary covers the validation and test text (OOV rate at most 0.1%)."""
    tokenizer = CharTokenizer.from_json(vocabulary)
    rates = {name: tokenizer.unknown_rate(text_splits["splits"][name]) for name in ("validation", "test")}
    return dg.AssetCheckResult(
        passed=all(rate <= MAX_HELD_OUT_OOV_RATE for rate in rates.values()),
        metadata={f"{name}_oov_rate": rate for name, rate in rates.items()} | {"limit": MAX_HELD_OUT_OOV_RATE},
    )
