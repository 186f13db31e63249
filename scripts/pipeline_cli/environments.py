"""One virtual environment per location (and the shared package's), built with uv from its lock file."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline_cli.bootstrap import ROOT, ROOT_REQUIREMENTS, UV, pip_index_flags
from pipeline_cli.locations import SHARED, Environment


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def uv(*args: str, python: Path | None = None, quiet: bool = True) -> None:
    """Run uv from the root environment, against `python`'s environment."""
    command = [str(UV), *args]
    if python is not None:
        command += ["--python", str(python)]
    if quiet:
        command.append("--quiet")
    subprocess.run(command, check=True, cwd=ROOT)


def fingerprint(env: Environment) -> str:
    """A hash of everything that decides an environment's contents; unchanged → setup skips it."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for path in (env.lock, env.path / "pyproject.toml", SHARED.path / "pyproject.toml"):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def build_environment(env: Environment, force: bool = False) -> str:
    """Create or update one environment with uv; returns what happened. Raises `FileNotFoundError` without a lock."""
    stamp = env.venv / ".setup-fingerprint"
    wanted = fingerprint(env)
    if not force and env.python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return "up to date"
    if not env.lock.exists():
        raise FileNotFoundError(f"{env.lock.relative_to(ROOT)} is missing: run `python scripts/cli.py lock`")
    if not env.python.exists():
        uv("venv", str(env.venv), "--python", sys.executable, "--seed")
    flags = pip_index_flags()
    # `install -r` (not `sync`) so that a CUDA build of torch on a GPU machine still pulls its nvidia-* wheels.
    # Bytecode compiled now, once, as the images do: every process the pipeline starts imports Dagster (and torch),
    # and where .pyc files are not written on import (PYTHONDONTWRITEBYTECODE) each would compile them again.
    uv("pip", "install", *flags, "--compile-bytecode", "-r", str(env.lock), python=env.python)
    editables = ["-e", str(SHARED.path)] + (["-e", str(env.path)] if env.package else [])
    uv("pip", "install", *flags, "--no-deps", *editables, python=env.python)
    stamp.write_text(wanted)
    return "built"


def _public_versions(text: str) -> str:
    """`torch==2.13.0+cpu` from a local wheel folder would not resolve elsewhere; `torch==2.13.0` matches both the
    local CPU build and PyPI's."""
    return re.sub(r"^(\S+==[^+\s]+)\+\S+", r"\1", text, flags=re.MULTILINE)


def lock_environment(env: Environment, upgrade: bool = False) -> None:
    """Re-resolve `env`'s requirements.lock from its pyproject pins (every extra; the shared package not pinned)."""
    uv(
        "pip",
        "compile",
        *pip_index_flags(),
        *(["--upgrade"] if upgrade else []),
        "--python-version",
        "3.11",
        f"{env.folder}/pyproject.toml",
        "--all-extras",
        "--no-emit-package",
        "shared-code-location",
        "-o",
        f"{env.folder}/requirements.lock",
    )  # relative paths: the lock's header names no local folder
    text = _public_versions(env.lock.read_text())
    env.lock.write_text(re.sub(r"^-e .*\n|^\S+ @ file://.*\n", "", text, flags=re.MULTILINE))
    # Extra images of a location (e.g. serving) have their own requirements-<image>.in.
    for source in sorted(env.path.glob("requirements-*.in")):
        target = source.with_suffix(".lock")
        uv("pip", "compile", *pip_index_flags(), "--python-version", "3.11", str(source.relative_to(ROOT)),
           "-o", str(target.relative_to(ROOT)))  # fmt: skip
        target.write_text(_public_versions(target.read_text()))


def lock_root(upgrade: bool = False) -> None:
    """Re-resolve scripts/requirements.lock (the root environment's) from scripts/requirements.in."""
    upgrade_flags = ["--upgrade"] if upgrade else []
    uv("pip", "compile", *pip_index_flags(), *upgrade_flags, "--python-version", "3.11", "scripts/requirements.in",
       "-o", "scripts/requirements.lock")  # fmt: skip
    ROOT_REQUIREMENTS.write_text(_public_versions(ROOT_REQUIREMENTS.read_text()))
