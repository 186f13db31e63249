"""The one IO manager through which every cross-location value flows.

Built on Dagster's `UPathIOManager`, so one implementation serves a local folder and object storage (s3://, gs://,
any fsspec URL) when locations run in separate containers. Each asset is one file, `<base>/<key path><ext>`, in the
format its contract (or its `storage_format` metadata) declares; a partitioned asset is a folder with one file per
partition, `<base>/<key path>/<partition><ext>`. Writes are atomic. Object storage is reached through `ObjectStore`
(endpoint, credentials, region), which training checkpoints (`root`) and the release folder use too; a store that
cannot be used fails the step with a `StorageError` naming the URI and the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from shared_code_location import settings
from shared_code_location.contract.asset_keys import STORAGE_FORMAT_METADATA_KEY, ContractAsset, contract_format
from shared_code_location.contract.storage import check_bucket, s3_options, storage_errors, storage_path
from shared_code_location.contract.storage_formats import (
    StorageFormat,
    StorageFormatError,
    atomic_write_bytes,
    decode,
    encode,
    is_local,
    sha256_hex,
)

if TYPE_CHECKING:
    from upath import UPath


def _declared_format(context: dg.InputContext | dg.OutputContext) -> StorageFormat:
    """The format of the value: the shared contract first, then the asset's `storage_format` metadata, else JSON."""
    if context.has_asset_key:
        fmt = contract_format(context.asset_key)
        if fmt is not None:
            return fmt
    output_context = context.upstream_output if isinstance(context, dg.InputContext) else context
    metadata = (output_context.definition_metadata if output_context is not None else None) or {}
    declared = metadata.get(STORAGE_FORMAT_METADATA_KEY, StorageFormat.JSON.value)
    try:
        return StorageFormat(getattr(declared, "value", declared))
    except ValueError as error:
        raise StorageFormatError(
            f"unknown {STORAGE_FORMAT_METADATA_KEY} {declared!r}; use one of {[f.value for f in StorageFormat]}"
        ) from error


class ContractUPathIOManager(dg.UPathIOManager):
    """Stores each value as one file in its declared `StorageFormat`; see `PipelineIOManager` for configuration."""

    def __init__(self, base_path: UPath):
        super().__init__(base_path=base_path)
        self._written: dict[str, tuple[int, str]] = {}

    @property
    def root(self) -> UPath:
        """The storage base, with its object-store options: where other pipeline data (checkpoints) goes too."""
        return self._base_path

    def make_directory(self, path: UPath) -> None:
        if is_local(path):  # object stores have no folders, and s3fs's mkdir would create a missing bucket
            path.mkdir(parents=True, exist_ok=True)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        with storage_errors(self._base_path):
            super().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        with storage_errors(self._base_path):
            return self._load_input(context)

    def get_asset_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        path = super().get_asset_relative_path(context)
        if context.has_asset_partitions:
            return path  # a folder: the extension goes on each partition's file
        return path.with_name(path.name + _declared_format(context).extension)

    def get_path_for_partition(self, context: dg.InputContext | dg.OutputContext, path: UPath, partition: str) -> UPath:
        return path / f"{partition}{_declared_format(context).extension}"

    def _load_input(self, context: dg.InputContext) -> Any:
        """As `UPathIOManager`, except that an unpartitioned asset reading a partitioned one always gets a dict
        `{partition: value}` (Dagster's default hands over the bare value when there is one partition). With the
        input metadata `allow_missing_partitions`, partitions never materialized are left out."""
        if not (context.has_asset_key and context.has_asset_partitions and not context.has_partition_key):
            return super().load_input(context)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        if allow_missing:
            check_bucket(self._base_path)  # or a missing bucket would read as no partition written yet
        values = {}
        for partition, path in self._get_paths_for_partitions(context).items():
            if allow_missing and not path.exists():
                continue
            values[partition] = self.load_from_path(context, path)
        return values

    def load_partition(self, contract: ContractAsset, partition: str) -> Any:
        """One partition of a contract asset, read outside an input (the deploy location reads only the winning
        experiment's model, not every experiment's)."""
        path = self._base_path.joinpath(*contract.key.path, f"{partition}{contract.storage_format.extension}")
        with storage_errors(path):
            if not path.exists():
                raise FileNotFoundError(f"{contract.key.to_user_string()} partition {partition!r}: no file at {path}")
            return self._decode(contract.storage_format, path.read_bytes())

    def stored(self, contract: ContractAsset) -> Any | None:
        """The last stored value of an unpartitioned contract asset, or None if it was never written: for an asset
        that builds on its own last value (the vocabulary keeps its ids)."""
        *folders, name = contract.key.path
        path = self._base_path.joinpath(*folders, name + contract.storage_format.extension)
        with storage_errors(path):
            return self._decode(contract.storage_format, path.read_bytes()) if path.exists() else None

    def _decode(self, fmt: StorageFormat, data: bytes) -> Any:
        """`decode`, except that a token-shards manifest comes back as the reader over its shards."""
        value = decode(fmt, data)
        if fmt is StorageFormat.TOKEN_SHARDS:
            from shared_code_location.contract.token_shards import TokenShards

            return TokenShards(value, root=self._base_path)
        return value

    def get_op_output_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        path = super().get_op_output_relative_path(context)
        return path.with_name(path.name + _declared_format(context).extension)

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        fmt = _declared_format(context)
        try:
            data = encode(fmt, obj)
        except StorageFormatError as error:
            raise StorageFormatError(
                f"{context.asset_key.to_user_string() if context.has_asset_key else 'output'}: {error}"
            ) from error
        atomic_write_bytes(path, data)
        self._written[str(path)] = (len(data), sha256_hex(data))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        if not path.exists():
            check_bucket(path)  # a missing bucket is not a missing value
            name = context.asset_key.to_user_string() if context.has_asset_key else str(path)
            raise FileNotFoundError(f"{name} has not been materialized yet: no file at {path}. Materialize it first.")
        return self._decode(_declared_format(context), path.read_bytes())

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, dg.MetadataValue]:
        path = self._get_path(context)
        size, digest = self._written.pop(str(path), (None, None))
        if size is None:
            return {}
        # `path` (added by UPathIOManager) is copyable text; a URL is a link the UI renders clickable.
        uri = path.as_uri() if is_local(path) else str(path)
        return {
            "uri": dg.MetadataValue.url(uri),
            "stored_bytes": dg.MetadataValue.int(size),
            "sha256": dg.MetadataValue.text(digest),
        }


class ObjectStore(dg.Config):
    """How s3:// URIs are reached: the endpoint (an S3-compatible store's, or AWS's by default), credentials and
    region. Unset fields are left to the AWS configuration (its variables, profile, the pod's IAM role).

    Nested config of the resources that reach storage, not a nested resource: Dagster initialises a nested resource
    with defaults through `InitResourceContext.dagster_run`, deprecated, a warning in every run and test."""

    endpoint_url: str | None = Field(default=None, description=settings.S3_ENDPOINT_URL.description)
    access_key_id: str | None = Field(default=None, description=settings.S3_ACCESS_KEY_ID.description)
    secret_access_key: str | None = Field(default=None, description=settings.S3_SECRET_ACCESS_KEY.description)
    region: str | None = Field(default=None, description=settings.S3_REGION.description)

    def path(self, uri: str) -> UPath:
        """`uri` (a folder, relative ones from the project root, or a URL) as a path through this store."""
        options = s3_options(self.endpoint_url, self.access_key_id, self.secret_access_key, self.region)
        return storage_path(uri, options)


class PipelineIOManager(dg.ConfigurableIOManagerFactory):
    """The shared IO manager. `base_uri` is any fsspec URL or local path; default: `settings.STORAGE_URI`
    (`$ML_PIPELINE_STORAGE_URI`, else `example_persistent_home/asset_storage` in the project)."""

    base_uri: str | None = Field(default=None, description=settings.STORAGE_URI.description)
    object_store: ObjectStore = Field(default_factory=ObjectStore, description="How s3:// URIs are reached.")

    def create_io_manager(self, context: dg.InitResourceContext) -> ContractUPathIOManager:
        return ContractUPathIOManager(base_path=self.object_store.path(self.base_uri or settings.storage_uri()))
