"""`etl/vocabulary`: the tokenizer's vocabulary, built from the train split only."""

import dagster as dg

from etl_code_location.defs.split import TEXT_SPLITS_KEY
from shared_code_location.contract.asset_keys import VOCABULARY
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import versioned_output
from shared_code_location.model.tokenizer import CharTokenizer


@dg.asset(
    **VOCABULARY.produced(),
    group_name="etl",
    ins={"text_splits": dg.AssetIn(key=TEXT_SPLITS_KEY)},
    code_version="1",
    kinds={"json"},
)
def vocabulary(context: dg.AssetExecutionContext, text_splits: dict) -> dg.Output[dict]:
    """Character vocabulary of the train split (id 0 is the unknown symbol), with the other splits' OOV rates."""
    tokenizer = CharTokenizer.fit(text_splits["splits"]["train"])
    context.add_output_metadata(
        {
            "vocab_size": tokenizer.vocab_size,
            "validation_oov_rate": tokenizer.unknown_rate(text_splits["splits"]["validation"]),
            "test_oov_rate": tokenizer.unknown_rate(text_splits["splits"]["test"]),
            "symbols": "".join(tokenizer.symbols[1:]).encode("unicode_escape").decode("ascii"),
        }
    )
    return versioned_output(tokenizer.to_json(), StorageFormat.JSON)
