"""Every asset that crosses a code-location boundary: its key and its storage format, defined once.

A producer declares `@dg.asset(**X.produced(), ...)`; a consumer declares `X.spec()` in its
`Definitions`. Both read the same object, so the key and the format can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from shared_code_location.contract.experiments import EXPERIMENTS
from shared_code_location.contract.storage_formats import StorageFormat

#: The resource key of `PipelineIOManager` in every location's `Definitions`. It is Dagster's default IO manager
#: key, so every asset and op output goes through it: nothing can fall back to Dagster's pickling IO manager.
IO_MANAGER_KEY = "io_manager"
#: The metadata entry that tells the IO manager how an asset is stored.
STORAGE_FORMAT_METADATA_KEY = "storage_format"
#: An asset may add this metadata entry: one line that `cli.py run` prints once the asset is materialized.
SUMMARY_METADATA_KEY = "summary"

#: One key prefix per stage, so the lineage graph groups by stage and a key says which location owns it.
ETL_PREFIX = "etl"
MODEL_PREFIX = "model"
EVALUATE_PREFIX = "evaluate"
DEPLOY_PREFIX = "deploy"


@dataclass(frozen=True)
class ContractAsset:
    """An asset produced in one location and read in another."""

    key: dg.AssetKey
    storage_format: StorageFormat
    description: str
    #: Producer and consumers partition it the same way (`None`: one value).
    partitions_def: dg.PartitionsDefinition | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """Definition metadata that producer and consumer both attach, so the IO manager knows the format."""
        return stored_as(self.storage_format)

    def produced(self, **metadata: object) -> dict[str, object]:
        """The producer's `@dg.asset(**X.produced(), ...)` arguments: key, description, partitions and format
        metadata, plus any further definition `metadata`."""
        produced: dict[str, object] = {
            "key": self.key,
            "description": self.description,
            "metadata": {**self.metadata, **metadata},
        }
        if self.partitions_def is not None:
            produced["partitions_def"] = self.partitions_def
        return produced

    def spec(self) -> dg.AssetSpec:
        """How a downstream location declares this upstream asset: loaded through the shared IO manager."""
        return dg.AssetSpec(
            self.key, description=self.description, metadata=self.metadata, partitions_def=self.partitions_def
        ).with_io_manager_key(IO_MANAGER_KEY)


def stored_as(storage_format: StorageFormat) -> dict[str, str]:
    """Definition metadata that tells the IO manager how a location's own asset (or op output) is stored:
    `metadata=stored_as(StorageFormat.JSON)`."""
    return {STORAGE_FORMAT_METADATA_KEY: storage_format.value}


def inputs(**contracts: ContractAsset) -> dict[str, dg.AssetIn]:
    """`ins=` for an asset that reads contract assets: `inputs(vocabulary=VOCABULARY, ...)`."""
    return {name: dg.AssetIn(key=contract.key) for name, contract in contracts.items()}


def _asset(
    prefix: str,
    name: str,
    storage_format: StorageFormat,
    description: str,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> ContractAsset:
    return ContractAsset(dg.AssetKey([prefix, name]), storage_format, description, partitions_def)


# 1_etl → 2_model, 3_evaluate, 4_deploy
VOCABULARY = _asset(
    ETL_PREFIX, "vocabulary", StorageFormat.JSON, "Tokenizer vocabulary built from the train split only."
)
# The token splits are manifests of `.npy` shards (`token_shards.py`); consumers get a `TokenShards` reader.
TRAIN_TOKENS = _asset(
    ETL_PREFIX, "train_tokens", StorageFormat.TOKEN_SHARDS, "Token ids of the train split: the manifest of its shards."
)
VALIDATION_TOKENS = _asset(
    ETL_PREFIX,
    "validation_tokens",
    StorageFormat.TOKEN_SHARDS,
    "Token ids of the validation split: the manifest of its shards.",
)
TEST_TOKENS = _asset(
    ETL_PREFIX,
    "test_tokens",
    StorageFormat.TOKEN_SHARDS,
    "Token ids of the held-out test split: the manifest of its shards.",
)

# 2_model → 3_evaluate, 4_deploy
TRAINED_MODEL = _asset(
    MODEL_PREFIX,
    "trained_model",
    StorageFormat.SAFETENSORS,
    "Decoder-only transformer: best-validation weights, with its config and training summary in the header. One "
    "partition per experiment.",
    EXPERIMENTS,
)

# 3_evaluate → 4_deploy
EVALUATION_REPORT = _asset(
    EVALUATE_PREFIX,
    "evaluation_report",
    StorageFormat.JSON,
    "Test-split metrics of the model beside unigram and bigram baselines, and generated samples. One partition per "
    "experiment.",
    EXPERIMENTS,
)

CONTRACT_ASSETS: tuple[ContractAsset, ...] = (
    VOCABULARY,
    TRAIN_TOKENS,
    VALIDATION_TOKENS,
    TEST_TOKENS,
    TRAINED_MODEL,
    EVALUATION_REPORT,
)
_BY_KEY = {asset.key: asset for asset in CONTRACT_ASSETS}


def contract_format(key: dg.AssetKey) -> StorageFormat | None:
    """The declared format of a contract asset, or None for assets that stay inside one location."""
    asset = _BY_KEY.get(key)
    return asset.storage_format if asset else None
