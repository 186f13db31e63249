"""The file formats through which data crosses code locations, and atomic writes; none of them unpickles.

| format        | Python value                  | file           |
|---------------|-------------------------------|----------------|
| text          | `str`                         | `.txt` (UTF-8) |
| json          | JSON-serializable values      | `.json`        |
| numpy         | `numpy.ndarray` (not object)  | `.npy`         |
| safetensors   | `TensorBundle`                | `.safetensors` |
| onnx          | `bytes` of an ONNX model      | `.onnx`        |
| token_shards  | a manifest of `.npy` shards   | `.json`        |

`token_shards` is how token ids cross locations (`contract/token_shards.py`): the stored value is a small JSON
manifest; the IO manager hands consumers a `TokenShards` reader over the shards it lists.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from upath import UPath


class StorageFormat(enum.StrEnum):
    """How one asset's value is stored; the value of the `storage_format` metadata entry."""

    TEXT = "text"
    JSON = "json"
    NUMPY = "numpy"
    SAFETENSORS = "safetensors"
    ONNX = "onnx"
    TOKEN_SHARDS = "token_shards"

    @property
    def extension(self) -> str:
        """The file extension, with its dot."""
        return _EXTENSIONS[self]


#: The `format` field of a token-shards manifest.
TOKEN_SHARDS_FORMAT = "token-shards/v1"

_EXTENSIONS = {
    StorageFormat.TEXT: ".txt",
    StorageFormat.JSON: ".json",
    StorageFormat.NUMPY: ".npy",
    StorageFormat.SAFETENSORS: ".safetensors",
    StorageFormat.ONNX: ".onnx",
    StorageFormat.TOKEN_SHARDS: ".json",
}


@dataclass
class TensorBundle:
    """Named arrays plus JSON-able metadata, stored as one safetensors file (metadata in its header)."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)


class StorageFormatError(TypeError):
    """A value does not fit the format its asset declares, or a stored file is not what it claims to be."""


def encode(fmt: StorageFormat, value: Any) -> bytes:
    """Serialize `value` in `fmt`, refusing values the format cannot hold faithfully."""
    if fmt is StorageFormat.TEXT:
        if not isinstance(value, str):
            raise StorageFormatError(f"text format needs a str, got {type(value).__name__}")
        return value.encode("utf-8")
    if fmt is StorageFormat.JSON:
        try:
            return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise StorageFormatError(f"json format cannot hold this {type(value).__name__}: {error}") from error
    if fmt is StorageFormat.NUMPY:
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise StorageFormatError(f"numpy format needs a non-object numpy array, got {type(value).__name__}")
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    if fmt is StorageFormat.SAFETENSORS:
        if not isinstance(value, TensorBundle):
            raise StorageFormatError(f"safetensors format needs a TensorBundle, got {type(value).__name__}")
        from safetensors.numpy import save

        header = {key: json.dumps(item, allow_nan=False) for key, item in value.metadata.items()}
        return save({name: np.ascontiguousarray(array) for name, array in value.tensors.items()}, metadata=header)
    if fmt is StorageFormat.ONNX:
        if not isinstance(value, (bytes, bytearray)):
            raise StorageFormatError(f"onnx format needs the model's bytes, got {type(value).__name__}")
        return bytes(value)
    if fmt is StorageFormat.TOKEN_SHARDS:
        return encode(StorageFormat.JSON, _manifest(getattr(value, "manifest", value)))  # a TokenShards, or its dict
    raise StorageFormatError(f"unknown storage format {fmt!r}")


def decode(fmt: StorageFormat, data: bytes) -> Any:
    """The inverse of `encode`."""
    if fmt is StorageFormat.TEXT:
        return data.decode("utf-8")
    if fmt is StorageFormat.JSON:
        return json.loads(data.decode("utf-8"))
    if fmt is StorageFormat.NUMPY:
        return np.load(io.BytesIO(data), allow_pickle=False)
    if fmt is StorageFormat.SAFETENSORS:
        from safetensors.numpy import load

        return TensorBundle(tensors=load(data), metadata=read_safetensors_metadata(data))
    if fmt is StorageFormat.ONNX:
        return data
    if fmt is StorageFormat.TOKEN_SHARDS:
        return _manifest(json.loads(data.decode("utf-8")))
    raise StorageFormatError(f"unknown storage format {fmt!r}")


def _manifest(value: Any) -> dict[str, Any]:
    """`value` if it is a token-shards manifest (`token_shards.py` checks the rest when it reads one)."""
    if not isinstance(value, dict) or value.get("format") != TOKEN_SHARDS_FORMAT:
        raise StorageFormatError(f"not a {TOKEN_SHARDS_FORMAT} manifest")
    return value


def read_safetensors_metadata(data: bytes) -> dict[str, Any]:
    """The JSON values stored in a safetensors header's `__metadata__` (the format stores strings only)."""
    if len(data) < 8:
        raise StorageFormatError("not a safetensors file: shorter than its 8-byte header length")
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    return {key: json.loads(item) for key, item in header.get("__metadata__", {}).items()}


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def is_local(path: UPath | Path) -> bool:
    """Whether `path` is on the local filesystem (a plain path, or a file:// UPath)."""
    return isinstance(path, Path) or getattr(path, "protocol", "") in ("", "file", "local")


def local_path(path: UPath | Path) -> Path:
    """A local `path` (a plain path, or a file:// UPath) as a plain `Path`."""
    return Path(os.fspath(path.path if hasattr(path, "path") and not isinstance(path, Path) else path))


def atomic_write_bytes(path: UPath | Path | str, data: bytes) -> None:
    """Write `data` so that readers see the old file or the new one, never a torn one.

    Locally: a temporary file in the same folder, fsync, rename over the target, fsync the folder. On object
    stores (s3://, gs://, memory://) a single PUT is already all-or-nothing, so the bytes are written directly.
    """
    if isinstance(path, str):
        path = Path(path)
    if not is_local(path):
        # No mkdir: object stores have no folders, and s3fs's would create a missing bucket (a typo's, say).
        path.write_bytes(data)
        return
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp's file is private (0600); pipeline data and releases are read by other users (a server's, say).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
