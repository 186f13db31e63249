"""The build context as Docker assembles it (honouring .dockerignore, with its last-match-wins and `!` exceptions),
so that a test can see what every image is built from without building one."""

from __future__ import annotations

import os
import re
import shutil
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
