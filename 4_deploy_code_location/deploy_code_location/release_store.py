"""The release folder in `example_output_resources/`: versioned releases, written atomically, and a `latest.json`
pointer that moves only to a release whose checks all passed. No torch, no Dagster: serving imports it too."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared_code_location.storage_formats import atomic_write_bytes, fsync_directory

RELEASES_DIR = "releases"
LATEST_POINTER = "latest.json"
RELEASE_FILES = ("model.onnx", "vocabulary.json", "model_card.json", "model_card.md")


class ReleaseNotFoundError(FileNotFoundError):
    """No release where one was asked for; the message says what to run."""


def write_release(output_dir: Path, version: str, files: dict[str, bytes]) -> Path:
    """Write `files` into `releases/<version>/` all at once: a hidden temporary folder, fsynced, then renamed.

    An existing release of the same version is never overwritten (versions are immutable).
    """
    releases = output_dir / RELEASES_DIR
    releases.mkdir(parents=True, exist_ok=True)
    target = releases / version
    if target.exists():
        raise FileExistsError(f"release {version} already exists at {target}; releases are immutable")
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=releases))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a release is meant to be read by servers
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
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


def point_latest_to(output_dir: Path, version: str, sha256: str) -> dict[str, Any]:
    """Atomically move `latest.json` to `version` (which must exist)."""
    if not (output_dir / RELEASES_DIR / version / "model.onnx").is_file():
        raise ReleaseNotFoundError(f"cannot point latest to {version}: no such release in {output_dir}")
    pointer = {"version": version, "path": f"{RELEASES_DIR}/{version}", "model_sha256": sha256}
    atomic_write_bytes(output_dir / LATEST_POINTER, json.dumps(pointer, indent=2).encode("utf-8"))
    return pointer


def resolve_release(output_dir: Path, release: str | None = None) -> Path:
    """The folder of a release: `release` as a path or a version name, or the latest good one when None."""
    if release:
        candidate = Path(release).expanduser()
        for path in (candidate, output_dir / RELEASES_DIR / release):
            if (path / "model.onnx").is_file():
                return path.resolve()
        raise ReleaseNotFoundError(f"no release {release!r}: neither a release folder nor a version in {output_dir}")
    pointer_path = output_dir / LATEST_POINTER
    if not pointer_path.is_file():
        raise ReleaseNotFoundError(
            f"no good release yet in {output_dir} (no {LATEST_POINTER}): run `python scripts/cli.py run` first"
        )
    pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
    return resolve_release(output_dir, str(output_dir / pointer["path"]))


def list_releases(output_dir: Path) -> list[str]:
    """Versions of every complete release, oldest first (versions start with a UTC timestamp)."""
    releases = output_dir / RELEASES_DIR
    if not releases.is_dir():
        return []
    return sorted(p.name for p in releases.iterdir() if not p.name.startswith(".") and (p / "model.onnx").is_file())
