"""Docker without a Docker engine, for the image tests: the build context as Docker assembles it (honouring
.dockerignore, with its last-match-wins and `!` exceptions), and a Dockerfile's COPY and install steps replayed into
a folder, so that what the image would hold can be loaded and checked."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def _pattern_regex(pattern: str) -> re.Pattern:
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def dockerignore_rules(root: Path) -> list[tuple[re.Pattern, bool]]:
    """(regex, excludes) for each line of root/.dockerignore, in order."""
    rules = []
    path = root / ".dockerignore"
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        rules.append((_pattern_regex(pattern), not negated))
    return rules


def is_ignored(relative: str, rules: list[tuple[re.Pattern, bool]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent folders, decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for regex, excludes in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = excludes
    return ignored


def build_context(root: Path, destination: Path) -> list[str]:
    """Copy the files Docker would send as the build context of `root` to `destination`; their relative paths."""
    rules = dockerignore_rules(root)
    sent = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and not is_ignored(relative, rules):
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
            sent.append(relative)
    return sent


@dataclass
class ReplayedImage:
    """What replaying a Dockerfile produced: the image's working directory and its virtual environment."""

    workdir: Path
    venv: Path
    env: dict[str, str] = field(default_factory=dict)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def replay(dockerfile: Path, context: Path, image_root: Path, uv_flags: list[str]) -> ReplayedImage:
    """COPY from `context` and run the `uv` install steps of `dockerfile`, with `image_root` standing for `/`.

    Other RUN steps (adding a user) and `COPY --from` another image (the uv binary) need a Docker engine and are
    skipped: the uv of the test's environment stands in. `uv_flags` (the machine's package indexes) are added to
    each `uv pip install`.
    """
    env: dict[str, str] = {}
    workdir = image_root

    def image_path(path: str) -> Path:
        path = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), path)
        return image_root / path.lstrip("/") if path.startswith("/") else workdir / path

    for keyword, rest in _instructions(dockerfile):
        if keyword == "ENV":
            for assignment in shlex.split(rest):
                name, _, value = assignment.partition("=")
                env[name] = value
        elif keyword == "WORKDIR":
            workdir = image_path(rest)
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and not rest.startswith("--from"):
            *sources, target = shlex.split(rest)
            for source in sources:
                origin = context / source.rstrip("/")
                if not origin.exists():
                    raise FileNotFoundError(f"{dockerfile.name}: COPY {source}: not in the build context")
                destination = image_path(target)
                if origin.is_dir():
                    shutil.copytree(origin, destination, dirs_exist_ok=True)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination if not target.endswith("/") else destination / origin.name)
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", rest)
            if not command.startswith("uv "):
                continue
            venv = image_path(env["VIRTUAL_ENV"])
            command = command.replace("uv pip install", "uv pip install " + shlex.join(uv_flags))
            path = f"{venv / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"  # our uv stands in
            run_env = os.environ | {"VIRTUAL_ENV": str(venv), "PATH": path}
            subprocess.run(["bash", "-c", command.replace('"$VIRTUAL_ENV"', shlex.quote(str(venv)))],
                           cwd=workdir, env=run_env, check=True, capture_output=True)  # fmt: skip
    return ReplayedImage(workdir=workdir, venv=image_path(env["VIRTUAL_ENV"]), env=env)
