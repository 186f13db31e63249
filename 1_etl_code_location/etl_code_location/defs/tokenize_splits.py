"""`etl/{train,validation,test}_tokens`: each split encoded with the train vocabulary."""

import hashlib

import dagster as dg
import numpy as np

from etl_code_location.defs.split import TEXT_SPLITS_KEY
from shared_code_location.contract.asset_keys import (
    IO_MANAGER_KEY,
    TEST_TOKENS,
    TRAIN_TOKENS,
    VALIDATION_TOKENS,
    VOCABULARY,
)
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.token_shards import store_array
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
    required_resource_keys={IO_MANAGER_KEY},
)
def tokenized_splits(context: dg.AssetExecutionContext, text_splits: dict, vocabulary: dict):
    """Token ids of each split, as one shard each; characters unseen in train become the unknown id 0."""
    tokenizer = CharTokenizer.from_json(vocabulary)
    root = context.resources.io_manager.root
    for split in _SPLIT_ASSETS:
        ids = tokenizer.encode(text_splits["splits"][split])
        unknown = int(np.count_nonzero(ids == UNKNOWN_ID))
        digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
        shards = store_array(root, f"etl/shards/{split}-{digest}.npy", ids, tokenizer.vocab_size, split)
        yield versioned_output(
            shards,
            StorageFormat.TOKEN_SHARDS,
            output_name=f"{split}_tokens",
            metadata={"tokens": len(ids), "unknown_tokens": unknown, "oov_rate": unknown / max(len(ids), 1)},
        )
