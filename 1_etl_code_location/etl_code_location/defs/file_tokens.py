"""`etl/file_tokens`: one input file, validated, normalized, split and tokenized into shards. One partition per file
(`CORPUS_FILES`): a new file is one more partition, a changed file re-runs its own, and a backfill of every file
fans out one run per partition (`BackfillPolicy.multi_run(1)`; one pod each under the Kubernetes run launcher).

A file is read once, a block at a time (`ingest.normalized_pieces`), its characters written as 16-bit ids to a local
scratch file; then it is cut into train / validation / test at line starts, and each split is written as `.npy`
shards of the file's own character ids (the smallest type that holds them) under `etl/shards/<file>/<version>/`,
where `<version>` is a digest of the file's bytes and the split fractions: a re-run never overwrites the shards the
last good manifests point to. Memory stays bounded by the block sizes, whatever the file's size.

The asset's value is the file's summary (JSON): its characters in code-point order (`symbols`: what the stored ids
index), and per split its offsets, shards and the count of each character (the held-out splits also the first
position of each), from which the vocabulary and the manifests are combined without reading any file again.
"""

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from etl_code_location.defs.ingest import CharacterIds, normalized_pieces
from etl_code_location.defs.split import SplitConfig, split_boundaries
from shared_code_location.contract.asset_keys import ETL_PREFIX, IO_MANAGER_KEY, SUMMARY_METADATA_KEY, stored_as
from shared_code_location.contract.corpus_files import (
    CORPUS_FILES,
    INPUT_FILES_RESOURCE_KEY,
    SOURCE_FINGERPRINT_METADATA_KEY,
    fingerprint,
)
from shared_code_location.contract.resources import InputFilesResource
from shared_code_location.contract.storage import storage_errors
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.token_shards import id_dtype, read_manifest, remove_folder, write_shard
from shared_code_location.contract.versions import versioned_output

if TYPE_CHECKING:
    from upath import UPath

#: One input file's shards and character counts; stays in this location (the manifests are what crosses).
FILE_TOKENS_KEY = dg.AssetKey([ETL_PREFIX, "file_tokens"])
#: Under the storage root: `<file>/<version>/<split>-<n>.npy`.
SHARDS_FOLDER = f"{ETL_PREFIX}/shards"
SPLITS = ("train", "validation", "test")
#: Tokens per shard at most (64 Mi: a shard is at most 64 MB of uint8).
SHARD_TOKENS = 1 << 26
#: Ids read back from the scratch file at a time.
_SCRATCH_BLOCK = 1 << 22
#: Bump when the same file and fractions would give other shards: their folders get other names.
SHARDS_FORMAT_VERSION = "1"


@dg.asset(
    key=FILE_TOKENS_KEY,
    partitions_def=CORPUS_FILES,
    group_name="etl",
    description="One input file (a partition per file): validated, normalized, split at line starts and tokenized "
    "into .npy shards, with its character counts.",
    metadata=stored_as(StorageFormat.JSON),
    code_version="1",
    # A backfill of many files: one run per file, each its own process (its own pod on Kubernetes).
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    # The shards go beside the data, through the IO manager's storage (its object store and credentials).
    required_resource_keys={IO_MANAGER_KEY, INPUT_FILES_RESOURCE_KEY},
    kinds={"numpy", "json"},
)
def file_tokens(context: dg.AssetExecutionContext, config: SplitConfig) -> dg.Output:
    """The partition's file as shards; its summary (see the module docstring) as the value."""
    name = context.partition_key
    input_files: InputFilesResource = getattr(context.resources, INPUT_FILES_RESOURCE_KEY)
    path = input_files.path / name
    with storage_errors(path):
        source = fingerprint(path.stat()) if path.exists() else None
    root = context.resources.io_manager.root
    existing = _shard_versions(root, name)  # first, so that storage that cannot be used fails before the file is read
    started = time.perf_counter()
    summary = tokenize_file(path, name, config, root)
    keep = {summary["version"], *_referenced_versions(root, name)}
    for stale in existing - keep:
        remove_folder(root, f"{SHARDS_FOLDER}/{name}/{stale}")
    splits = summary["splits"]
    tokens = {split: splits[split]["end"] - splits[split]["start"] for split in SPLITS}
    shards = sum(len(splits[split]["shards"]) for split in SPLITS)
    seconds = time.perf_counter() - started
    context.log.info(f"{name}: {summary['bytes']:,} bytes in {seconds:.1f} s, {len(summary['symbols'])} characters")
    return versioned_output(
        summary,
        StorageFormat.JSON,
        metadata={
            SOURCE_FINGERPRINT_METADATA_KEY: source,
            "file_sha256": summary["sha256"],
            "characters": summary["characters"],
            "distinct_characters": len(summary["symbols"]),
            **{f"{split}_tokens": count for split, count in tokens.items()},
            "shards": shards,
            "seconds": round(seconds, 2),
            SUMMARY_METADATA_KEY: f"{name}: {summary['characters']:,} characters, train {tokens['train']:,} / "
            f"validation {tokens['validation']:,} / test {tokens['test']:,} tokens in {shards} shard(s)",
        },
    )


def tokenize_file(path: "UPath", name: str, config: SplitConfig, root: "UPath | Path") -> dict[str, Any]:
    """Read, split and shard the file at `path` (partition `name`) under `root`; its summary."""
    digest, ids = hashlib.sha256(), CharacterIds()
    with tempfile.TemporaryDirectory(prefix="etl-scratch-") as folder:
        scratch = Path(folder) / "ids.u16"
        length, size = 0, 0
        with open(scratch, "wb") as out:
            for piece in normalized_pieces(path, digest):
                encoded = ids.encode(piece, path)
                encoded.tofile(out)
                length += len(encoded)
        size = path.stat().st_size
        newline = ids.id_of("\n")  # every normalized text ends with one
        train_end, validation_end = split_boundaries(
            length, config.train_fraction, config.validation_fraction, lambda at: _line_start(scratch, at, newline)
        )
        symbols, position = ids.sorted_ids()
        order = position.astype(np.uint16)  # scratch id -> the file's own id (code-point order)
        version = _version(digest.hexdigest(), config)
        bounds = {"train": (0, train_end), "validation": (train_end, validation_end), "test": (validation_end, length)}
        splits, lines = {}, 0
        for split, (start, end) in bounds.items():
            stats = _SplitStats(len(symbols), int(order[newline]), lines, held_out=split != "train")
            shards = []
            for index, first in enumerate(range(start, end, SHARD_TOKENS)):
                last = min(first + SHARD_TOKENS, end)
                relative = f"{SHARDS_FOLDER}/{name}/{version}/{split}-{index:03d}.npy"
                blocks = _mapped(scratch, first, last, order, stats, id_dtype(len(symbols)))
                _, sha = write_shard(root, relative, blocks, last - first, id_dtype(len(symbols)))
                shards.append({"path": relative, "tokens": last - first, "sha256": sha})
            splits[split] = {"start": start, "end": end, "shards": shards, **stats.to_json()}
            lines = stats.lines
    return {
        "file": name,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "version": version,
        "characters": length,
        "lines": lines,
        "symbols": symbols,
        "splits": splits,
    }


def _version(file_sha256: str, config: SplitConfig) -> str:
    """The name of a file's shard folder: what its shards depend on (the bytes, the fractions, the format)."""
    key = json.dumps([file_sha256, config.train_fraction, config.validation_fraction, SHARDS_FORMAT_VERSION])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _read(scratch: Path, start: int, stop: int) -> np.ndarray:
    with open(scratch, "rb") as handle:
        handle.seek(2 * start)
        return np.fromfile(handle, dtype=np.uint16, count=stop - start)


def _line_start(scratch: Path, offset: int, newline: int) -> int:
    """The first line start at or after `offset` (just past a newline), or the end of the text."""
    length = scratch.stat().st_size // 2
    for start in range(offset, length, _SCRATCH_BLOCK):
        block = _read(scratch, start, min(start + _SCRATCH_BLOCK, length))
        found = np.flatnonzero(block == newline)
        if len(found):
            return start + int(found[0]) + 1
    return length


def _mapped(
    scratch: Path, start: int, stop: int, order: np.ndarray, stats: "_SplitStats", dtype: np.dtype
) -> Iterator[np.ndarray]:
    """The file's own ids of characters `start:stop`, a block at a time, counted into `stats` on the way."""
    for first in range(start, stop, _SCRATCH_BLOCK):
        block = order[_read(scratch, first, min(first + _SCRATCH_BLOCK, stop))]
        stats.add(block, first)
        yield block.astype(dtype)


class _SplitStats:
    """Per character of the file: its count in the split and, for a held-out split, where it first occurs
    (character offset in the file and line number). Also counts the lines up to the split's end."""

    def __init__(self, size: int, newline: int, lines_before: int, held_out: bool):
        self.counts = np.zeros(size, dtype=np.int64)
        self.first = np.full((size, 2), -1, dtype=np.int64) if held_out else None
        self.newline, self.lines = newline, lines_before

    def add(self, ids: np.ndarray, offset: int) -> None:
        present = np.bincount(ids, minlength=len(self.counts))
        self.counts += present
        is_newline = ids == self.newline
        if self.first is not None:
            for symbol in np.flatnonzero((present > 0) & (self.first[:, 0] < 0)):
                at = int(np.argmax(ids == symbol))
                self.first[symbol] = (offset + at, self.lines + int(np.count_nonzero(is_newline[:at])) + 1)
        self.lines += int(np.count_nonzero(is_newline))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"counts": self.counts.tolist()}
        if self.first is not None:
            data["first"] = [None if offset < 0 else [int(offset), int(line)] for offset, line in self.first]
        return data


def _shard_versions(root: "UPath | Path", name: str) -> set[str]:
    folder = root.joinpath(*SHARDS_FOLDER.split("/"), name)
    with storage_errors(folder):
        return {child.name for child in folder.iterdir()} if folder.exists() else set()


def _referenced_versions(root: "UPath | Path", name: str) -> set[str]:
    """The shard folders of file `name` that the stored manifests or the file's last summary point to: kept while
    they may still be read (a training in progress, or a combine of the last summary)."""
    prefix, found = f"{SHARDS_FOLDER}/{name}/", set()
    for relative in [f"{ETL_PREFIX}/{split}_tokens.json" for split in SPLITS]:
        path = root.joinpath(*relative.split("/"))
        with storage_errors(path):
            if path.exists():
                found |= {s["path"] for s in read_manifest(path)["shards"] if s["path"].startswith(prefix)}
    summary = root.joinpath(*FILE_TOKENS_KEY.path, f"{name}{StorageFormat.JSON.extension}")
    with storage_errors(summary):
        if summary.exists():
            found.add(prefix + json.loads(summary.read_bytes())["version"] + "/")
    return {path[len(prefix) :].split("/", 1)[0] for path in found}
