"""`etl/vocabulary`: the tokenizer's vocabulary, a reduction over the train characters of every file that keeps ids.

The first vocabulary is every character of the train splits in code-point order after the unknown symbol (id 0),
as `CharTokenizer.fit` makes it. After that, a character keeps its id for good: one that a new or changed file
brings is appended at the end, and one that no train split holds any more stays. So shards written before stay
valid, a model keeps meaning the same characters, and the vocabulary's data version (a hash of its symbols) changes
exactly when an id was added. To start afresh (say, a corpus replaced by a wholly different one), remove the stored
vocabulary (`cli.py clean --data` removes all pipeline data).
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY
from shared_code_location.contract.asset_keys import IO_MANAGER_KEY, SUMMARY_METADATA_KEY, VOCABULARY
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import INPUT_PARTITIONS_METADATA_KEY, versioned_output
from shared_code_location.model.tokenizer import UNKNOWN_TOKEN, CharTokenizer
from shared_code_location.runtime.automation import ON_FILES_CHANGE


def characters(file_tokens: Mapping[str, dict], split: str) -> dict[str, int]:
    """`{character: count}` in `split` over every file."""
    counts: dict[str, int] = {}
    for summary in file_tokens.values():
        for symbol, count in zip(summary["symbols"], summary["splits"][split]["counts"], strict=True):
            if count:
                counts[symbol] = counts.get(symbol, 0) + count
    return counts


def extended(previous: CharTokenizer | None, train_characters: set[str]) -> CharTokenizer:
    """`previous`'s symbols, then the characters of `train_characters` it lacks, in code-point order."""
    kept = previous.symbols if previous is not None else (UNKNOWN_TOKEN,)
    return CharTokenizer((*kept, *sorted(train_characters - set(kept) - {UNKNOWN_TOKEN})))


def _escaped(symbols: Any) -> str:
    return "".join(symbols).encode("unicode_escape").decode("ascii")


@dg.asset(
    **VOCABULARY.produced(),
    group_name="etl",
    ins={"file_tokens": dg.AssetIn(key=FILE_TOKENS_KEY)},
    code_version="2",
    required_resource_keys={IO_MANAGER_KEY},
    automation_condition=ON_FILES_CHANGE,
    kinds={"json"},
)
def vocabulary(context: dg.AssetExecutionContext, file_tokens: dict[str, dict]) -> dg.Output[dict]:
    """Character vocabulary of the train splits (id 0 is the unknown symbol), ids kept from the last one."""
    stored = context.resources.io_manager.stored(VOCABULARY)
    previous = CharTokenizer.from_json(stored) if stored is not None else None
    tokenizer = extended(previous, set(characters(file_tokens, "train")))
    added = tokenizer.symbols[previous.vocab_size if previous is not None else 0 :]
    if previous is not None and added:
        context.log.info(f"new characters appended at ids {previous.vocab_size}..: '{_escaped(added)}'")
    rates = {}
    for split in ("validation", "test"):
        held_out = characters(file_tokens, split)
        missing = sum(count for symbol, count in held_out.items() if symbol not in tokenizer.symbols)
        rates[f"{split}_oov_rate"] = missing / max(sum(held_out.values()), 1)
    context.add_output_metadata(
        {
            "vocab_size": tokenizer.vocab_size,
            "added": _escaped(added if previous is not None else ()),
            **rates,
            "symbols": _escaped(tokenizer.symbols[1:]),
            "files": len(file_tokens),
            INPUT_PARTITIONS_METADATA_KEY: dg.MetadataValue.json(sorted(file_tokens)),
            SUMMARY_METADATA_KEY: f"{tokenizer.vocab_size} symbols from {len(file_tokens)} file(s)"
            + (f", {len(added)} new: '{_escaped(added)}'" if previous is not None and added else ""),
        }
    )
    return versioned_output(tokenizer.to_json(), StorageFormat.JSON)
