"""`etl/{train,validation,test}_tokens`: each split's manifest, combined from every file's shards and the vocabulary.

What crosses to the other locations is small: for each split, the shards of every file (in file name order), their
token counts and checksums, and how each shard's ids map to the vocabulary's (`contract/token_shards.py`). A
character that the vocabulary lacks maps to the unknown id 0. No token is read or written here: a new file, or a
new character, costs a rewrite of three small JSON files.
"""

import dagster as dg

from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY, SHARDS_FOLDER, SPLITS
from shared_code_location.contract.asset_keys import (
    IO_MANAGER_KEY,
    TEST_TOKENS,
    TRAIN_TOKENS,
    VALIDATION_TOKENS,
    VOCABULARY,
)
from shared_code_location.contract.storage import storage_errors
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.token_shards import Shard, manifest, remove_folder
from shared_code_location.contract.versions import INPUT_PARTITIONS_METADATA_KEY, content_version, versioned_output
from shared_code_location.model.tokenizer import UNKNOWN_ID, CharTokenizer
from shared_code_location.runtime.automation import ON_FILES_CHANGE

_SPLIT_ASSETS = {"train": TRAIN_TOKENS, "validation": VALIDATION_TOKENS, "test": TEST_TOKENS}


@dg.multi_asset(
    outs={
        f"{split}_tokens": dg.AssetOut(
            key=asset.key,
            description=asset.description,
            metadata=asset.metadata,
            code_version="2",
            group_name="etl",
            automation_condition=ON_FILES_CHANGE,
            kinds={"numpy", "json"},
        )
        for split, asset in _SPLIT_ASSETS.items()
    },
    ins={"file_tokens": dg.AssetIn(key=FILE_TOKENS_KEY), "vocabulary": dg.AssetIn(key=VOCABULARY.key)},
    required_resource_keys={IO_MANAGER_KEY},
)
def token_manifests(context: dg.AssetExecutionContext, file_tokens: dict[str, dict], vocabulary: dict):
    """The manifest of each split; then the shards of files no longer in the input folder are removed."""
    tokenizer = CharTokenizer.from_json(vocabulary)
    version = content_version(StorageFormat.JSON, vocabulary).value
    files = sorted(file_tokens)
    for split in SPLITS:
        shards, unknown = [], 0
        for name in files:
            summary = file_tokens[name]
            ids = tuple(int(i) for i in tokenizer.encode("".join(summary["symbols"])))
            part = summary["splits"][split]
            unknown += sum(count for i, count in zip(ids, part["counts"], strict=True) if i == UNKNOWN_ID)
            shards += [Shard(s["path"], name, s["tokens"], s["sha256"], ids) for s in part["shards"]]
        split_manifest = manifest(split, shards, version, tokenizer.vocab_size)
        yield versioned_output(
            split_manifest,
            StorageFormat.TOKEN_SHARDS,
            output_name=f"{split}_tokens",
            metadata={
                "tokens": split_manifest["tokens"],
                "shards": len(shards),
                "files": len(files),
                "unknown_tokens": unknown,
                "oov_rate": unknown / max(split_manifest["tokens"], 1),
                "vocabulary_version": version,
                INPUT_PARTITIONS_METADATA_KEY: dg.MetadataValue.json(files),
            },
        )
    # The manifests no longer list the shards of removed files (a training that still reads them has them open).
    root = context.resources.io_manager.root
    folder = root.joinpath(*SHARDS_FOLDER.split("/"))
    with storage_errors(folder):
        gone = sorted({child.name for child in folder.iterdir()} - set(files)) if folder.exists() else []
    for name in gone:
        remove_folder(root, f"{SHARDS_FOLDER}/{name}")
