"""Every image of the project, built with a real container engine: `python scripts/cli.py images`.

Docker where it runs, else Podman (which builds with its own CLI: `docker build` against Podman's API falls back to
the legacy builder, which has no `RUN --mount`). The images build from the repository root, each from its
Dockerfile (rendered from deploy/templates/). Where PyTorch's CPU build comes from a wheel folder of the pip
configuration (as `setup` takes it), the builds get that folder as a package index served on loopback, with the
build's network the host's; elsewhere they take it from PyTorch's index, as the Dockerfiles say.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline_cli.bootstrap import ROOT, pip_settings
from pipeline_cli.derived_files import COMPOSE_DIR, SERVING_IMAGE, image_name, serving_location
from pipeline_cli.locations import LOCATIONS


class EngineError(RuntimeError):
    """No container engine, or a build or command that failed; the message says which and shows its output."""


@dataclass(frozen=True)
class Image:
    """One image the project builds: its tag, its Dockerfile and build arguments."""

    tag: str
    dockerfile: str
    build_args: tuple[tuple[str, str], ...] = ()


def project_images(torch: str = "cpu") -> list[Image]:
    """Every image: one per location (those with PyTorch on its `torch` build), the server's, and the Compose
    topology's webserver/daemon and object store."""
    images = []
    for env in LOCATIONS:
        args = (("TORCH", torch),) if (env.path / "requirements-cuda.lock").exists() else ()
        images.append(Image(f"{image_name(env)}:latest", f"{env.folder}/Dockerfile", args))
    serving = serving_location(LOCATIONS)
    if serving is not None:
        images.append(Image(f"{SERVING_IMAGE}:latest", f"{serving.folder}/serving.Dockerfile"))
    images.append(Image("ml-pipeline-dagster:latest", f"{COMPOSE_DIR}/dagster.Dockerfile"))
    images.append(Image("ml-pipeline-object-store:latest", f"{COMPOSE_DIR}/object-store.Dockerfile"))
    return images


def _answers(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def engine() -> str | None:
    """`podman` or `docker`, whichever runs containers here (Podman first: see the module docstring); None if
    neither does."""
    if shutil.which("podman") and _answers(["podman", "info"]):
        return "podman"
    if shutil.which("docker") and _answers(["docker", "info"]):
        return "docker"
    return None


def run(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    """The engine's CLI with `args`; `EngineError` with its output when it fails (and `check`)."""
    name = engine()
    if name is None:
        raise EngineError("no container engine answers: install Docker or Podman (CI: .ci/container-engine.sh)")
    result = subprocess.run([name, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise EngineError(f"{name} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


#: The loopback port of the local PyTorch index, when it is free.
_TORCH_INDEX_PORT = 29471


@contextlib.contextmanager
def cpu_torch_index() -> Iterator[str | None]:
    """A package index with PyTorch's CPU build for the builds, when only a wheel folder of the pip configuration
    has it: its torch wheels, served on loopback. None: the Dockerfiles' own index."""
    wheels = [w for folder in pip_settings()["find-links"] for w in Path(folder).glob("torch-*+cpu-*.whl")]
    if not wheels:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="torch-index-") as root:
        folder = Path(root) / "simple" / "torch"
        folder.mkdir(parents=True)
        for wheel in wheels:
            (folder / wheel.name).symlink_to(wheel)
        links = "".join(f'<a href="{wheel.name}">{wheel.name}</a>' for wheel in wheels)
        (folder / "index.html").write_text(f"<html><body>{links}</body></html>")

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        handler = functools.partial(Quiet, directory=root)
        try:  # always the same URL where it can be: a build argument that changes invalidates the install layer
            server = http.server.ThreadingHTTPServer(("127.0.0.1", _TORCH_INDEX_PORT), handler)
        except OSError:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple"
        finally:
            server.shutdown()


@dataclass
class Built:
    """An image as built: the seconds it took, and the build's output."""

    image: Image
    seconds: float
    output: str


def build(image: Image, torch_index: str | None, context: Path = ROOT) -> Built:
    """Build `image` from the repository root (`context`) with the engine."""
    args = [arg for name, value in image.build_args for arg in ("--build-arg", f"{name}={value}")]
    if torch_index:
        args += ["--build-arg", f"TORCH_CPU_INDEX={torch_index}", "--network", "host"]
    started = time.monotonic()
    result = run("build", "-f", str(context / image.dockerfile), "-t", image.tag, *args, str(context))
    return Built(image, time.monotonic() - started, result.stdout + result.stderr)


def build_all(images: list[Image], context: Path = ROOT) -> list[Built]:
    """Build every one of `images`, in order."""
    with cpu_torch_index() as index:
        return [build(image, index, context) for image in images]


def image_size(tag: str) -> int:
    """The image's size in bytes, as the engine reports it."""
    return int(run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def dependency_step_cached(output: str) -> bool:
    """Whether a build's output shows its dependency layer (the install of the lock) taken from the cache."""
    steps = re.split(r"\n(?=STEP \d+/\d+:|#\d+ \[)", output)
    install = [s for s in steps if "uv pip sync" in s.splitlines()[0]]
    return bool(install) and all("Using cache" in s or "CACHED" in s for s in install)
