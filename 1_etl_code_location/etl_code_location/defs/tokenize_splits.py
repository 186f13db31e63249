"""`etl/{train,validation,test}_tokens`: each split encoded with the train vocabulary."""

import dagster as dg
import numpy as np

from etl_code_location.defs.split import TEXT_SPLITS_KEY
from shared_code_location.contract.asset_keys import TEST_TOKENS, TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import versioned_output
from shared_code_location.model.tokenizer import UNKNOWN_ID, CharTokenizer

_SPLIT_ASSETS = {"train": TRAIN_TOKENS, "validation": VALIDATION_TOKENS, "test": TEST_TOKENS}


@dg.multi_asset(
    outs={
        f"{split}_tokens": dg.AssetOut(
            key=asset.key,
            description=asset.description,
            metadata=asset.metadata,
            code_version="1",
            group_name="etl",
            kinds={"numpy"},
        )
        for split, asset in _SPLIT_ASSETS.items()
    },
    ins={"text_splits": dg.AssetIn(key=TEXT_SPLITS_KEY), "vocabulary": dg.AssetIn(key=VOCABULARY.key)},
)
def tokenized_splits(text_splits: dict, vocabulary: dict):
    """Token ids of each split; characters unseen in train become the unknown id 0."""
    tokenizer = CharTokenizer.from_json(vocabulary)
    for split in _SPLIT_ASSETS:
        ids = tokenizer.encode(text_splits["splits"][split])
        unknown = int(np.count_nonzero(ids == UNKNOWN_ID))
        yield versioned_output(
            ids,
            StorageFormat.NUMPY,
            output_name=f"{split}_tokens",
            metadata={"tokens": len(ids), "unknown_tokens": unknown, "oov_rate": unknown / max(len(ids), 1)},
        )
