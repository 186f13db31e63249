"""`etl/text_splits`: train / validation / test as contiguous blocks of the corpus, so nothing leaks across."""

import dagster as dg
from pydantic import model_validator

from etl_code_location.defs.ingest import CORPUS_KEY
from shared_code_location.contract.asset_keys import ETL_PREFIX, stored_as
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import versioned_output

#: The corpus in contiguous train/validation/test blocks; stays in this location.
TEXT_SPLITS_KEY = dg.AssetKey([ETL_PREFIX, "text_splits"])


class SplitConfig(dg.Config):
    """Fractions of the corpus, in order: train first, then validation, then test (the rest)."""

    train_fraction: float = 0.9
    validation_fraction: float = 0.05

    @model_validator(mode="after")
    def _fractions_leave_a_test_split(self) -> "SplitConfig":
        if not (0 < self.train_fraction < 1 and 0 < self.validation_fraction < 1):
            raise ValueError("train_fraction and validation_fraction must each be between 0 and 1")
        if self.train_fraction + self.validation_fraction >= 1:
            raise ValueError(
                f"train_fraction + validation_fraction = {self.train_fraction + self.validation_fraction:g} "
                "leaves nothing for the test split; keep their sum below 1"
            )
        return self


def split_boundaries(text: str, train_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """Character offsets ending train and validation, moved forward to the next line start so no line is cut."""

    def snap(offset: int) -> int:
        newline = text.find("\n", offset)
        return len(text) if newline == -1 else newline + 1

    train_end = snap(int(len(text) * train_fraction))
    validation_end = max(train_end, snap(int(len(text) * (train_fraction + validation_fraction))))
    return train_end, validation_end


@dg.asset(
    key=TEXT_SPLITS_KEY,
    group_name="etl",
    ins={"corpus": dg.AssetIn(key=CORPUS_KEY)},
    metadata=stored_as(StorageFormat.JSON),
    code_version="1",
    kinds={"json"},
)
def text_splits(context: dg.AssetExecutionContext, config: SplitConfig, corpus: str) -> dg.Output[dict]:
    """The corpus cut into train, validation and test text, with the offsets of each block."""
    train_end, validation_end = split_boundaries(corpus, config.train_fraction, config.validation_fraction)
    splits = {
        "train": corpus[:train_end],
        "validation": corpus[train_end:validation_end],
        "test": corpus[validation_end:],
    }
    empty = [name for name, text in splits.items() if not text]
    if empty:
        raise ValueError(
            f"split(s) {empty} are empty: the corpus ({len(corpus)} characters, {corpus.count(chr(10))} lines) "
            "is too small for these fractions"
        )
    offsets = {
        "train": [0, train_end],
        "validation": [train_end, validation_end],
        "test": [validation_end, len(corpus)],
    }
    context.add_output_metadata(
        {f"{name}_characters": len(text) for name, text in splits.items()} | {"offsets": dg.MetadataValue.json(offsets)}
    )
    return versioned_output({"offsets": offsets, "splits": splits}, StorageFormat.JSON)
