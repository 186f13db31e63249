"""Where the pipeline's data and releases live: a local folder or object storage, reached the same way everywhere.

Every part that reads or writes them (the IO manager, training checkpoints, the release store, the server) opens
its URI with `storage_path`, with the same S3 options: the endpoint, credentials and region of `settings.py`
(`ML_PIPELINE_S3_*`), which the resources bind (`resources.ObjectStore`) and the server reads. Unset, they fall back
to the AWS configuration (its variables, profile or the pod's IAM role). An object store that cannot be used fails
with a `StorageError` that names the URI and the problem, not a botocore trace.

Dagster-free (the server imports it); upath, fsspec and s3fs are imported only when a path is opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shared_code_location import settings

if TYPE_CHECKING:
    from upath import UPath

#: Protocols that take the S3 options.
S3_PROTOCOLS = ("s3", "s3a")
#: botocore's limits for every S3 call: a dead endpoint fails in seconds, not after minutes of retries.
_S3_CLIENT_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}


class StorageError(OSError):
    """Storage that cannot be used (unreachable, access denied, no such bucket): the message names the URI, the
    endpoint and the problem."""


class MissingBucketError(StorageError):
    """The bucket of an s3:// URI does not exist (yet: it may be created later, by its first write)."""


def protocol(uri: str) -> str:
    """`s3` for `s3://bucket/prefix`, `""` for a local path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_remote(uri: str) -> bool:
    """Whether `uri` is object storage (or any fsspec URL) rather than a local folder."""
    return protocol(uri) not in ("", "file", "local")


def s3_options(
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """s3fs's options for an endpoint, credentials and region; what is unset is left to the AWS configuration."""
    options: dict[str, Any] = {"config_kwargs": _S3_CLIENT_CONFIG}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if access_key_id:
        options["key"] = access_key_id
    if secret_access_key:
        options["secret"] = secret_access_key
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def s3_options_from_settings() -> dict[str, Any]:
    """`s3_options` from the `ML_PIPELINE_S3_*` settings (for what runs without Dagster's resources: the server)."""
    return s3_options(
        settings.S3_ENDPOINT_URL.get(),
        settings.S3_ACCESS_KEY_ID.get(),
        settings.S3_SECRET_ACCESS_KEY.get(),
        settings.S3_REGION.get(),
    )


def storage_path(uri: str, s3: Mapping[str, Any] | None = None) -> UPath:
    """`uri` as a path: a local folder (relative ones from the project root) or a URL, with the S3 options `s3`
    (default: from the settings) where it is an s3:// URI."""
    from upath import UPath

    if not is_remote(uri):
        return UPath(settings.resolve_project_path(uri.removeprefix("file://")))
    options = dict(s3_options_from_settings() if s3 is None else s3) if protocol(uri) in S3_PROTOCOLS else {}
    return UPath(uri, **options)


def describe(path: UPath | str) -> str:
    """A path as a user reads it: the URI, and for S3 the endpoint it is reached at."""
    endpoint = (getattr(path, "storage_options", None) or {}).get("endpoint_url")
    return f"{path} (endpoint {endpoint})" if endpoint else str(path)


def check_bucket(path: UPath) -> None:
    """Raise `StorageError` if `path` is in object storage and its bucket does not exist: a read of a missing bucket
    finds nothing, which would otherwise read as "not written yet"."""
    if protocol(str(path)) not in S3_PROTOCOLS:
        return
    bucket = str(path).split("://", 1)[1].split("/", 1)[0]
    with storage_errors(path):
        try:  # HEAD the bucket: unlike `exists`, it tells a missing bucket from a refused one
            path.fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise MissingBucketError(f"{describe(path)}: the bucket {bucket!r} does not exist") from None


@contextlib.contextmanager
def storage_errors(path: UPath | str) -> Iterator[None]:
    """Turn what object storage raises into a `StorageError` naming `path`: unreachable, access denied, no such
    bucket, no credentials. Anything else (a file that is simply missing, say) passes through unchanged."""
    try:
        yield
    except StorageError:
        raise
    except PermissionError as error:
        raise StorageError(
            f"{describe(path)}: access denied ({error}); check {settings.S3_ACCESS_KEY_ID.name} and "
            f"{settings.S3_SECRET_ACCESS_KEY.name}"
        ) from None
    except FileNotFoundError as error:
        if "bucket" not in str(error).lower():
            raise
        bucket = str(path).split("://", 1)[-1].split("/", 1)[0]
        raise MissingBucketError(f"{describe(path)}: the bucket {bucket!r} does not exist ({error})") from None
    except Exception as error:
        kind = _unusable(error)
        if kind is None:
            raise
        raise StorageError(f"{describe(path)}: {kind} ({error})") from None


def _unusable(error: BaseException) -> str | None:
    """What makes the store unusable, for errors that are not OSError subclasses (botocore's own), else None."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError"}:
        return "the object store cannot be reached"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return (
            f"no credentials for object storage: set {settings.S3_ACCESS_KEY_ID.name} and "
            f"{settings.S3_SECRET_ACCESS_KEY.name} (or the AWS configuration)"
        )
    if isinstance(error, ConnectionError | TimeoutError):
        return "the object store cannot be reached"
    return None
