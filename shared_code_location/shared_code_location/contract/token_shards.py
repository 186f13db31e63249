"""Token shards: how a split's tokens cross locations without ever being loaded whole.

The ETL writes the tokens of each input file and split as `.npy` shards (one-dimensional, the smallest unsigned
integer type that holds the file's characters), atomically, under the pipeline's storage (a folder or object
storage). A shard is immutable: its name carries the digest of the file it came from, so a re-run never overwrites
the shards the last good manifest points to.

`etl/train_tokens` (and validation, test) is a **manifest** (`StorageFormat.TOKEN_SHARDS`, JSON):

    {"format": "token-shards/v1", "split": "train", "tokens": 1003854,
     "vocabulary": {"version": "<sha256 of the vocabulary>", "vocab_size": 66, "dtype": "uint8"},
     "shards": [{"path": "etl/shards/<file>/<digest>/train-000.npy", "file": "<file>", "tokens": 1003854,
                 "sha256": "<of the .npy file>", "ids": [1, 2, ...]}]}

A shard stores each character as its index in the sorted characters of its own file; `ids` maps those to the
vocabulary's ids (0, the unknown symbol, for a character the vocabulary does not hold). So a shard stays valid
whatever the vocabulary becomes: when a new file brings a new character, the vocabulary appends it, the manifests
are rewritten with new maps, and no shard is touched.

`TokenShards` is the one reader, used by every location: the IO manager hands it over as the input value. Locally
each shard is memory-mapped (nothing is read until used); from object storage each shard is fetched once into a
local cache (`ML_PIPELINE_TOKEN_CACHE`), named and checked by its sha256, then memory-mapped. Reads give vocabulary
ids in the vocabulary's own dtype (`dtype`).

NumPy only (no torch): `shared_code_location.model.token_windows` builds training batches and evaluation windows on
top of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared_code_location import settings
from shared_code_location.contract.storage_formats import TOKEN_SHARDS_FORMAT, fsync_directory, is_local, local_path

if TYPE_CHECKING:
    from upath import UPath

MANIFEST_FORMAT = TOKEN_SHARDS_FORMAT
#: Bytes read or written at a time when a shard is copied or checked.
_BLOCK = 8 << 20


class TokenShardsError(ValueError):
    """A manifest or a shard that is not what the contract says: the message names the shard and the problem."""


def id_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids `0 .. size - 1`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise TokenShardsError(f"{size} ids do not fit in 32 bits")


@dataclass(frozen=True)
class Shard:
    """One `.npy` file of a split: where it is (relative to the storage root), which input file it came from, how
    many tokens it holds, its sha256, and the vocabulary id of each id it stores."""

    path: str
    file: str
    tokens: int
    sha256: str
    ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "file": self.file,
            "tokens": self.tokens,
            "sha256": self.sha256,
            "ids": list(self.ids),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shard:
        try:
            return cls(str(data["path"]), str(data["file"]), int(data["tokens"]), str(data["sha256"]),
                       tuple(int(i) for i in data["ids"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise TokenShardsError(f"malformed shard entry {dict(data)!r}: {error}") from error


def manifest(split: str, shards: Iterable[Shard], vocabulary_version: str | None, vocab_size: int) -> dict[str, Any]:
    """The manifest of `split`: its shards in order, their total, and the vocabulary their `ids` map into."""
    shards = list(shards)
    for shard in shards:
        if shard.ids and max(shard.ids) >= vocab_size:
            raise TokenShardsError(f"{shard.path} maps to id {max(shard.ids)}, outside a vocabulary of {vocab_size}")
    return {
        "format": MANIFEST_FORMAT,
        "split": split,
        "tokens": sum(shard.tokens for shard in shards),
        "vocabulary": {"version": vocabulary_version, "vocab_size": vocab_size, "dtype": id_dtype(vocab_size).name},
        "shards": [shard.to_json() for shard in shards],
    }


def check_manifest(value: Any) -> dict[str, Any]:
    """`value` if it is a token-shards manifest (shards well formed, the total right), else `TokenShardsError`."""
    if not isinstance(value, Mapping) or value.get("format") != MANIFEST_FORMAT:
        raise TokenShardsError(f"not a {MANIFEST_FORMAT} manifest")
    shards = [Shard.from_json(entry) for entry in value.get("shards", [])]
    if sum(shard.tokens for shard in shards) != value.get("tokens"):
        raise TokenShardsError(f"the manifest says {value.get('tokens')} tokens; its shards hold a different number")
    return dict(value)


class TokenShards:
    """One split's tokens: the shards a manifest lists, read lazily. See the module docstring."""

    def __init__(self, manifest: Mapping[str, Any], root: UPath | Path | None = None):
        self.manifest = check_manifest(manifest)
        self.root = root
        self.shards: tuple[Shard, ...] = tuple(Shard.from_json(entry) for entry in self.manifest["shards"])
        self._arrays: dict[int, np.ndarray] = {}
        self._maps = [np.asarray(shard.ids, dtype=self.dtype) for shard in self.shards]

    @classmethod
    def from_array(cls, ids: np.ndarray, vocab_size: int | None = None, split: str = "tokens") -> TokenShards:
        """One in-memory shard of vocabulary ids (tests, benchmarks, callers that hold an array already)."""
        ids = np.ascontiguousarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "ui":
            raise TokenShardsError(f"token ids are a one-dimensional integer array, not {ids.dtype} {ids.shape}")
        size = vocab_size if vocab_size is not None else (int(ids.max()) + 1 if len(ids) else 1)
        digest = hashlib.sha256(ids.astype(id_dtype(size), copy=False).tobytes()).hexdigest()
        shard = Shard(path="", file="<array>", tokens=len(ids), sha256=digest, ids=tuple(range(size)))
        shards = cls(manifest(split, [shard], None, size))
        shards._arrays[0] = ids
        return shards

    @classmethod
    def open(cls, root: UPath | Path, relative: str) -> TokenShards:
        """The split whose manifest is stored at `root/relative` (e.g. `etl/train_tokens.json`), outside Dagster."""
        return cls(read_manifest(root.joinpath(*relative.split("/"))), root=root)

    @property
    def tokens(self) -> int:
        """Tokens in all shards together."""
        return int(self.manifest["tokens"])

    def __len__(self) -> int:
        return self.tokens

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocabulary"]["vocab_size"])

    @property
    def vocabulary_version(self) -> str | None:
        """The data version of the vocabulary the shards' id maps point into."""
        return self.manifest["vocabulary"]["version"]

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds the vocabulary's ids: what reads return."""
        return id_dtype(self.vocab_size)

    @property
    def fingerprint(self) -> str:
        """A sha256 that changes whenever any token would: the shards' checksums and id maps, in order."""
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(f"{shard.sha256}:{shard.tokens}:{','.join(map(str, shard.ids))};".encode())
        return digest.hexdigest()

    def stored_ids(self, index: int) -> np.ndarray:
        """Shard `index` as stored (ids of its own file's characters), memory-mapped read-only (copy-on-write, so
        torch can wrap it). Fetched into the local cache first when the storage is remote."""
        if index not in self._arrays:
            shard = self.shards[index]
            path = self._local_file(shard)
            array = np.load(path, mmap_mode="c", allow_pickle=False)
            if array.ndim != 1 or len(array) != shard.tokens:
                raise TokenShardsError(f"{path} holds {array.shape} tokens, the manifest says ({shard.tokens},)")
            self._arrays[index] = array
        return self._arrays[index]

    def id_map(self, index: int) -> np.ndarray:
        """Stored id → vocabulary id, for shard `index`."""
        return self._maps[index]

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Vocabulary ids of tokens `start:stop` of shard `index` (a new array of `dtype`)."""
        return self._maps[index][self.stored_ids(index)[start:stop]]

    def gather(self, index: int, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Vocabulary ids at `positions` (any shape) of shard `index`, into `out` if given."""
        return np.take(self._maps[index], self.stored_ids(index)[positions], out=out)

    def chunks(self, chunk_tokens: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(shard index, start, vocabulary ids) of consecutive pieces of at most `chunk_tokens` tokens, shard after
        shard: the whole split streamed in bounded memory."""
        for index, shard in enumerate(self.shards):
            for start in range(0, shard.tokens, chunk_tokens):
                yield index, start, self.read(index, start, start + chunk_tokens)

    def _local_file(self, shard: Shard) -> Path:
        if self.root is None:
            raise TokenShardsError(f"no storage root to read {shard.path} from")
        path = self.root.joinpath(*shard.path.split("/"))
        if is_local(path):
            local = local_path(path)
            if not local.is_file():
                raise TokenShardsError(f"shard {shard.path} of the {self.manifest['split']} split is missing: {local}")
            return local
        return _cached(path, shard)


def _cache_folder() -> Path:
    configured = settings.TOKEN_CACHE.get()
    return (
        settings.resolve_project_path(configured) if configured else Path(tempfile.gettempdir()) / "ml-pipeline-tokens"
    )


def _cached(path: UPath, shard: Shard) -> Path:
    """The local copy of a remote shard, fetched once and checked against its sha256 (a cache entry is named by it,
    so it can never be stale)."""
    from shared_code_location.contract.storage import storage_errors

    folder = _cache_folder()
    target = folder / f"{shard.sha256}.npy"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{shard.sha256[:16]}.", suffix=".tmp", dir=folder)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, storage_errors(path), path.open("rb") as source:
            while block := source.read(_BLOCK):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != shard.sha256:
            raise TokenShardsError(f"{path}: sha256 {digest.hexdigest()}, the manifest says {shard.sha256}")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def write_shard(
    root: UPath | Path, relative: str, blocks: Iterable[np.ndarray], tokens: int, dtype: np.dtype
) -> tuple[int, str]:
    """Write a one-dimensional `.npy` of `tokens` values of `dtype` at `root/relative` from `blocks` (streamed, in
    bounded memory), atomically: readers see no file or the whole one. Returns (bytes written, sha256).

    Locally: a temporary file beside the target, fsynced and renamed. In object storage: a local temporary file,
    then one upload (a PUT is all-or-nothing)."""
    from shared_code_location.contract.storage import storage_errors

    target = root.joinpath(*relative.split("/"))
    local = is_local(target)
    folder = local_path(target).parent if local else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".shard.", suffix=".tmp", dir=folder)
    digest, written = hashlib.sha256(), 0
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            header = io.BytesIO()
            fields = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                      "shape": (tokens,)}  # fmt: skip
            np.lib.format.write_array_header_1_0(header, fields)
            digest.update(header.getvalue())
            handle.write(header.getvalue())
            for block in blocks:
                data = np.ascontiguousarray(block, dtype=dtype)
                digest.update(memoryview(data).cast("B"))
                handle.write(memoryview(data).cast("B"))
                written += len(data)
            if written != tokens:
                raise TokenShardsError(f"{relative}: {written} tokens written, {tokens} announced")
            handle.flush()
            os.fsync(handle.fileno())
        size = os.path.getsize(tmp_name)
        if local:
            os.replace(tmp_name, local_path(target))
            fsync_directory(folder)
        else:
            with storage_errors(target):
                target.fs.put_file(tmp_name, target.path)
            Path(tmp_name).unlink()
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def remove_folder(root: UPath | Path, relative: str) -> None:
    """Remove the folder `root/relative` and everything in it (shards no manifest points to any more)."""
    import shutil

    from shared_code_location.contract.storage import storage_errors

    folder = root.joinpath(*relative.split("/"))
    with storage_errors(folder):
        if is_local(folder):
            shutil.rmtree(local_path(folder), ignore_errors=True)
        elif folder.exists():
            folder.fs.rm(folder.path, recursive=True)


def store_array(root: UPath | Path, relative: str, ids: np.ndarray, vocab_size: int, split: str) -> dict[str, Any]:
    """Write `ids` (vocabulary ids) as one shard at `root/relative` and return its manifest: how tests and tools
    that hold an array make the ETL's output."""
    dtype = id_dtype(vocab_size)
    _, digest = write_shard(root, relative, [ids.astype(dtype)], len(ids), dtype)
    shard = Shard(relative, relative.rsplit("/", 1)[-1], len(ids), digest, tuple(range(vocab_size)))
    return manifest(split, [shard], None, vocab_size)


def read_manifest(path: UPath | Path) -> dict[str, Any]:
    """The manifest stored at `path` (e.g. `<storage>/etl/train_tokens.json`)."""
    return check_manifest(json.loads(path.read_bytes().decode("utf-8")))
