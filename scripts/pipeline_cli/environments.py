"""One virtual environment per location (and the shared package's), built with uv from its lock file.

A location that rebuilds the model has two locks, one per PyTorch build: `requirements.lock` with the CPU build
(`torch==X+cpu`, no CUDA libraries) and `requirements-cuda.lock` with PyPI's CUDA build and its `nvidia-*` wheels.
`setup` installs the one that fits the machine (`ML_PIPELINE_TORCH`, default: CUDA only where `nvidia-smi` lists a
GPU); the images install the one their Dockerfile names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from pipeline_cli.bootstrap import PINS_FILE, ROOT, ROOT_REQUIREMENTS, UV, pip_index_flags, pip_settings
from pipeline_cli.locations import SHARED, Environment
from shared_code_location import settings

#: The PyTorch builds a lock can name.
TORCH_VARIANTS = ("cpu", "cuda")
#: The lock of each build, in a location folder (the CPU one is the location's plain lock).
LOCK_FILES = {"cpu": "requirements.lock", "cuda": "requirements-cuda.lock"}


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp") as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)  # a temporary file is private (0600); these are project files
    os.replace(tmp.name, path)


def uv(*args: str, python: Path | None = None, quiet: bool = True) -> None:
    """Run uv from the root environment, against `python`'s environment."""
    command = [str(UV), *args]
    if python is not None:
        command += ["--python", str(python)]
    if quiet:
        command.append("--quiet")
    subprocess.run(command, check=True, cwd=ROOT)


# ------------------------------------------------------------------------------------------------ PyTorch builds


def torch_pin() -> str:
    """The one torch pin of the project (`torch==2.13.0`), from the shared package's `[torch]` extra."""
    project = tomllib.loads((SHARED.path / "pyproject.toml").read_text())["project"]
    return next(pin for pin in project["optional-dependencies"]["torch"] if pin.startswith("torch=="))


def machine_torch_variant() -> str:
    """The PyTorch build for this machine: `$ML_PIPELINE_TORCH` if `cpu` or `cuda`, else (`auto`) CUDA when
    `nvidia-smi` lists a GPU, CPU otherwise."""
    wanted = settings.TORCH_VARIANT.get()
    if wanted in TORCH_VARIANTS:
        return wanted
    if wanted != "auto":
        raise ValueError(f"{settings.TORCH_VARIANT.name}={wanted!r}: choose auto, {' or '.join(TORCH_VARIANTS)}")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "cpu"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "cuda" if listed.returncode == 0 and "GPU" in listed.stdout else "cpu"


def lock_file(env: Environment, variant: str = "cpu") -> Path:
    """The lock `setup` installs for `variant`: the CUDA lock where the location has one, else its plain lock."""
    cuda = env.path / LOCK_FILES["cuda"]
    return cuda if variant == "cuda" and cuda.exists() else env.lock


def cpu_torch_flags(version: str) -> list[str]:
    """uv flags that make PyTorch's CPU build `torch==<version>` (e.g. 2.13.0+cpu) reachable: none when a
    `find-links` folder of the pip configuration holds its wheel (a machine with wheels on disk), else PyTorch's
    CPU index (`ML_PIPELINE_TORCH_CPU_INDEX`)."""
    for location in pip_settings()["find-links"]:
        folder = Path(location.removeprefix("file://"))
        if folder.is_dir() and any(folder.glob(f"torch-{version}-*.whl")):
            return []
    index = settings.TORCH_CPU_INDEX.get()
    return [] if index == "none" else ["--index", index]


def newest_cpu_torch() -> str:
    """The newest PyTorch version whose CPU build the machine reaches: in a `find-links` folder of the pip
    configuration, else on PyTorch's CPU index (`ML_PIPELINE_TORCH_CPU_INDEX`); the current pin if neither says."""
    import urllib.request

    pattern = re.compile(r"torch-(\d+(?:\.\d+)+)\+cpu-cp311-cp311-")
    found = [m[1] for loc in pip_settings()["find-links"] for w in Path(loc.removeprefix("file://")).glob("torch-*")
             if (m := pattern.match(w.name))]  # fmt: skip
    index = settings.TORCH_CPU_INDEX.get()
    if not found and index and index != "none":
        try:
            with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=30) as response:
                found = [m[1] for m in pattern.finditer(response.read().decode("utf-8", "replace"))]
        except OSError:
            pass
    if not found:
        return torch_pin().removeprefix("torch==")
    return max(found, key=lambda version: tuple(int(part) for part in version.split(".")))


def lock_torch_flags(lock: Path) -> list[str]:
    """The flags `lock` needs to install: those of its CPU build of torch, if it pins one."""
    pinned = re.search(r"^torch==(\S+\+cpu)\s*$", lock.read_text(), flags=re.MULTILINE)
    return cpu_torch_flags(pinned.group(1)) if pinned else []


# ------------------------------------------------------------------------------------------------ setup


def fingerprint(env: Environment, lock: Path) -> str:
    """A hash of everything that decides an environment's contents; unchanged → setup skips it."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}:{lock.name}".encode())
    for path in (lock, env.path / "pyproject.toml", SHARED.path / "pyproject.toml"):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def build_environment(env: Environment, force: bool = False, variant: str = "cpu") -> str:
    """Create or update one environment with uv, with the PyTorch build `variant`; returns what happened. Raises
    `FileNotFoundError` without a lock."""
    lock = lock_file(env, variant)
    stamp = env.venv / ".setup-fingerprint"
    if not lock.exists():
        raise FileNotFoundError(f"{lock.relative_to(ROOT)} is missing: run `python scripts/cli.py lock`")
    wanted = fingerprint(env, lock)
    if not force and env.python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return "up to date"
    if not env.python.exists():
        uv("venv", str(env.venv), "--python", sys.executable)
    flags = pip_index_flags() + lock_torch_flags(lock)
    # `sync`: exactly the lock, so a venv that held the other PyTorch build loses its CUDA libraries. No bytecode
    # compiled here: the processes the CLI starts cache it as they import (see `commands.py`), only what they use.
    uv("pip", "sync", *flags, str(lock), python=env.python)
    editables = ["-e", str(SHARED.path)] + (["-e", str(env.path)] if env.package else [])
    uv("pip", "install", *flags, "--no-deps", *editables, python=env.python)
    stamp.write_text(wanted)
    return "built" + (f" ({lock.name})" if lock != env.lock else "")


# ------------------------------------------------------------------------------------------------ lock


def _compile(source: str, output: Path, flags: list[str], upgrade: bool, *extra: str) -> None:
    """`uv pip compile source -o output` for Python 3.11 under the project's pins (pins.txt), with paths relative to
    the root; the lock's header names the command that writes it, not this machine's folders."""
    uv("pip", "compile", *flags, *(["--upgrade"] if upgrade else []), "--python-version", "3.11", source, *extra,
       "-c", PINS_FILE.name, "--custom-compile-command", "python scripts/cli.py lock",
       "-o", str(output.relative_to(ROOT)))  # fmt: skip


def lock_environment(env: Environment, upgrade: bool = False) -> list[Path]:
    """Re-resolve `env`'s locks from its pyproject pins (every extra; the shared package not pinned): the CPU
    build of torch in `requirements.lock`, and where torch is in it, the CUDA build in `requirements-cuda.lock`.
    Returns the locks written."""
    source = f"{env.folder}/pyproject.toml"
    extra = ("--all-extras", "--no-emit-package", "shared-code-location")
    version = torch_pin().removeprefix("torch==")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as override:
        override.write(f"torch=={version}+cpu\n")
        override.flush()
        cpu_flags = pip_index_flags() + cpu_torch_flags(f"{version}+cpu")
        _compile(source, env.lock, cpu_flags, upgrade, *extra, "--override", override.name)
    written = [_strip_local_packages(env.lock)]
    cuda = env.path / LOCK_FILES["cuda"]
    cpu_pins = re.findall(r"^(\S+==\S+)\s*$", env.lock.read_text(), flags=re.MULTILINE)
    if any(pin.startswith("torch==") for pin in cpu_pins):
        # The same versions as the CPU lock but for the PyTorch build (and its CUDA libraries); PyPI's torch for
        # Linux is the CUDA build, and a wheel folder's CPU build must not stand in for it.
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as same_versions:
            same_versions.write("".join(f"{pin}\n" for pin in cpu_pins if not pin.startswith("torch==")))
            same_versions.flush()
            _compile(source, cuda, pip_index_flags(find_links=False), False, *extra, "-c", same_versions.name)
        written.append(_strip_local_packages(cuda))
    elif cuda.exists():
        cuda.unlink()
    # Extra images of a location (e.g. serving) have their own requirements-<image>.in, resolved to the versions of
    # the location's lock wherever they share a package: the image runs what the location's tests ran.
    for image_source in sorted(env.path.glob("requirements-*.in")):
        target = image_source.with_suffix(".lock")
        location_lock = str(env.lock.relative_to(ROOT))
        _compile(str(image_source.relative_to(ROOT)), target, pip_index_flags(), upgrade, "-c", location_lock)
        written.append(target)
    return written


def _strip_local_packages(lock: Path) -> Path:
    """The lock without editable or local-path lines (the shared package and the location are installed from the
    checkout, not pinned), and without the temporary files' paths (what they stand for, instead)."""
    text = re.sub(r"^-e .*\n|^\S+ @ file://.*\n", "", lock.read_text(), flags=re.MULTILINE)
    text = re.sub(r"--override \S+", "the CPU build (cli.py lock)", text)
    lock.write_text(re.sub(r"^ +# +-c /\S+\n", "", text, flags=re.MULTILINE))  # the CUDA lock's "same versions"
    return lock


#: Images that are no location's: the Compose topology's webserver and daemon.
IMAGE_REQUIREMENTS = ("deploy/compose/requirements.in",)
#: Test-only tools with an environment of their own, in no location's lock: the lm-evaluation-harness.
TEST_REQUIREMENTS = ("tests/harness/requirements.in",)


def lock_root(upgrade: bool = False) -> list[Path]:
    """Re-resolve scripts/requirements.lock (the root environment's) from scripts/requirements.in, and the lock of
    each image that is no location's and of each test-only environment; returns the locks written."""
    _compile("scripts/requirements.in", ROOT_REQUIREMENTS, pip_index_flags(), upgrade)
    written = [ROOT_REQUIREMENTS]
    for source in (*IMAGE_REQUIREMENTS, *TEST_REQUIREMENTS):
        target = (ROOT / source).with_suffix(".lock")
        _compile(source, target, pip_index_flags(), upgrade)
        written.append(target)
    return written


def test_environment(source: str) -> Path:
    """The venv of a test-only tool (`TEST_REQUIREMENTS`), built from its lock beside it or brought up to date
    (skipped when the lock did not change); its folder. Torch-free: plain index flags suffice."""
    lock = (ROOT / source).with_suffix(".lock")
    venv = lock.parent / ".venv"
    python, stamp = venv / "bin" / "python", venv / ".setup-fingerprint"
    wanted = hashlib.sha256(f"{sys.version_info[:2]}:".encode() + lock.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv
    if not python.exists():
        uv("venv", str(venv), "--python", sys.executable)
    uv("pip", "sync", *pip_index_flags(), str(lock), python=python)
    stamp.write_text(wanted)
    return venv
