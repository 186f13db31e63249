"""The container engine for the image and Compose tests (see scripts/pipeline_cli/images.py): skip without one."""

from __future__ import annotations

import os

import pytest

from pipeline_cli.images import engine, run


def require_engine() -> str:
    """The engine's name, or skip: these tests need one (CI installs it with .ci/container-engine.sh).

    Where CI_REQUIRE_CONTAINER_TESTS=1 (CI sets it), a missing engine fails the test instead: a CI run that
    skipped every container test would pass while proving nothing about the images.
    """
    missing = pytest.fail if os.environ.get("CI_REQUIRE_CONTAINER_TESTS") == "1" else pytest.skip
    name = engine()
    if name is None:
        missing("no container engine: see .ci/run, which sets one up with .ci/container-engine.sh")
    if name == "podman" and not os.environ.get("DOCKER_HOST"):
        missing("Podman without its Docker API socket (DOCKER_HOST): see .ci/container-engine.sh")
    return name


def in_image(tag: str, *command: str, user: str | None = None, timeout: float = 300):
    """Run `command` in a throwaway container of `tag`; the completed process."""
    extra = ["--user", user] if user else []
    return run("run", "--rm", *extra, "--entrypoint", command[0], tag, *command[1:], timeout=timeout, check=False)
