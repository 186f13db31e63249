"""The releases: versioned release folders and a `latest.json` pointer that moves only to a release whose checks all
passed, in a local folder (`example_output_resources/`) or object storage (`s3://bucket/releases`). No torch, no
Dagster: serving imports it too.

A release is complete once its `model_card.json` exists. Locally the whole folder appears at once (written into a
hidden folder, fsynced, renamed); in object storage, where a folder cannot be renamed, each file is one atomic PUT and
the card goes last. `latest.json` is replaced in one step in both. Either way a reader sees a complete release or
none, and a failed write never touches the last good release or the pointer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared_code_location.contract.storage import check_bucket, storage_errors, storage_path
from shared_code_location.contract.storage_formats import atomic_write_bytes, fsync_directory, is_local

RELEASES_DIR = "releases"
LATEST_POINTER = "latest.json"
#: Written last: a release folder without it is incomplete and never served.
MANIFEST = "model_card.json"
#: How many earlier releases `latest.json` remembers, most recent first (what `rollback` goes back to).
HISTORY_LENGTH = 20


class ReleaseNotFoundError(FileNotFoundError):
    """No release where one was asked for; the message says what to run."""


def write_release(output_dir: Path, version: str, files: dict[str, bytes]) -> Path:
    """Write `files` as release `version` under `output_dir` (a folder or an object-storage path) and return its
    folder; it becomes visible complete or not at all. An existing release is never overwritten (versions are
    immutable)."""
    target = output_dir / RELEASES_DIR / version
    with storage_errors(target):
        if (target / MANIFEST).exists():
            raise FileExistsError(f"release {version} already exists at {target}; releases are immutable")
        if not is_local(target):
            for name in sorted(files, key=lambda name: name == MANIFEST):  # the manifest last
                (target / name).write_bytes(files[name])
            return target
    return _write_local_release(Path(target), files)


def _write_local_release(target: Path, files: dict[str, bytes]) -> Path:
    releases = target.parent
    releases.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=releases))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a release is meant to be read by servers
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                os.fchmod(handle.fileno(), 0o644)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        fsync_directory(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(releases)
    return target


def point_latest_to(output_dir: Path, version: str, sha256: str, history: list[str] | None = None) -> dict[str, Any]:
    """Atomically move `latest.json` to `version` (which must be a complete release). The release it pointed to
    becomes the first of its `history` (what `rollback_target` returns to), unless `history` is given."""
    pointer_path = output_dir / LATEST_POINTER
    with storage_errors(pointer_path):
        if not (output_dir / RELEASES_DIR / version / MANIFEST).exists():
            raise ReleaseNotFoundError(f"cannot point latest to {version}: no such release in {output_dir}")
        if history is None:
            current = read_pointer(output_dir)
            history = [] if current is None else [current["version"], *current.get("history", [])]
        history = [earlier for earlier in history if earlier != version][:HISTORY_LENGTH]
        pointer = {"version": version, "path": f"{RELEASES_DIR}/{version}", "model_sha256": sha256}
        pointer |= {"promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "history": history}
        atomic_write_bytes(pointer_path, json.dumps(pointer, indent=2).encode("utf-8"))
    return pointer


def rollback_target(output_dir: Path) -> tuple[str, list[str]]:
    """The release that was live before the current one, and the history that remains once it is live again;
    `ReleaseNotFoundError` when there is none to go back to."""
    pointer = read_pointer(output_dir)
    if pointer is None:
        raise ReleaseNotFoundError(f"no {LATEST_POINTER} in {output_dir}: nothing is live, nothing to roll back")
    history = pointer.get("history", [])
    if not history:
        raise ReleaseNotFoundError(
            f"{LATEST_POINTER} records no release before {pointer['version']}: promote one by its version instead"
        )
    return history[0], history[1:]


def read_card(output_dir: Path, version: str) -> dict[str, Any]:
    """The model card of release `version`."""
    path = output_dir / RELEASES_DIR / version / MANIFEST
    with storage_errors(path):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReleaseNotFoundError(f"no release {version!r} in {output_dir}") from None


def read_pointer(output_dir: Path) -> dict[str, Any] | None:
    """`latest.json` under `output_dir`, or None while there is none."""
    pointer_path = output_dir / LATEST_POINTER
    with storage_errors(pointer_path):
        try:
            return json.loads(pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            check_bucket(pointer_path)  # a missing bucket is not "no release yet"
            return None


def resolve_release(output_dir: Path, release: str | None = None) -> Path:
    """The folder of a release: `release` as a folder (or URI) or a version name, or the latest good one when None.
    `ReleaseNotFoundError` says what is missing."""
    if release:
        given = storage_path(release) if "://" in release else Path(release).expanduser().resolve()
        for path in (given, output_dir / RELEASES_DIR / release):
            with storage_errors(path):
                if (path / MANIFEST).exists():
                    return path
        raise ReleaseNotFoundError(f"no release {release!r}: neither a release folder nor a version in {output_dir}")
    pointer = read_pointer(output_dir)
    if pointer is None:
        raise ReleaseNotFoundError(
            f"no good release yet in {output_dir} (no {LATEST_POINTER}): run `python scripts/cli.py run` first"
        )
    return resolve_release(output_dir, pointer["version"])


def list_releases(output_dir: Path) -> list[str]:
    """Versions of every complete release, oldest first (versions start with a UTC timestamp)."""
    releases = output_dir / RELEASES_DIR
    with storage_errors(releases):
        if not releases.is_dir():
            return []
        return sorted(p.name for p in releases.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists())
