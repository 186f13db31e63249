"""`new-location NAME` and `rename-location OLD NEW`: change the set of locations consistently, or not at all.

Both check every name first and change nothing when one is bad. Then they write the files, add or rename the entry
in dg.toml (the one list), regenerate the derived files, lock and build the venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from pipeline_cli.bootstrap import ROOT
from pipeline_cli.derived_files import write_all
from pipeline_cli.environments import atomic_write_text, build_environment, lock_environment
from pipeline_cli.locations import (
    SHARED,
    WORKSPACE_FILE,
    Environment,
    LocationError,
    check_stem,
    find,
    load_locations,
    names_for,
    number_of,
)

_TEXT_SUFFIXES = {".py", ".toml", ".md", ".yaml", ".yml", ".lock", ".txt", ".cfg", ".in", ".json", ""}
_SKIP_PARTS = {".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}


#: What `new-location` writes: a location in the shape of the shipped ones, rendered with its names.
TEMPLATE = Path(__file__).parent / "location_template"


def _upstream_contract() -> str:
    """The contract asset a new location reads in its example: the last one the shared package declares."""
    text = (SHARED.path / SHARED.folder / "contract" / "asset_keys.py").read_text(encoding="utf-8")
    declared = re.search(r"^CONTRACT_ASSETS\b[^=]*=\s*\(([^)]*)\)", text, flags=re.MULTILINE | re.DOTALL)
    if declared is None:
        raise LocationError("shared_code_location/contract/asset_keys.py declares no CONTRACT_ASSETS")
    return re.findall(r"[A-Z_][A-Z0-9_]*", declared.group(1))[-1]


def _render_template(folder: Path, names: dict[str, str], stem: str) -> None:
    """`location_template/` into `folder`: `__package__` becomes the package, each file rendered with Jinja2."""
    import jinja2

    environment = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    context = {"names": names, "stem": stem, "upstream": _upstream_contract()}
    for source in sorted(p for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        target = folder / str(source.relative_to(TEMPLATE)).replace("__package__", names["package"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(environment.from_string(source.read_text(encoding="utf-8")).render(context))


def _add_to_workspace(folder: str) -> str:
    text = (ROOT / WORKSPACE_FILE).read_text(encoding="utf-8")
    return text.rstrip("\n") + f'\n\n[[workspace.projects]]\npath = "{folder}"\n'


def new_location(stem: str, build: bool = True) -> Environment:
    """Scaffold location `stem` after the last one, in the shape of the shipped ones (`location_template/`): its
    pyproject (the shared package's pins), a `defs/` folder loaded by `load_location` with resources, an upstream
    spec and an example asset, a test; its dg.toml entry and the derived files; then (with `build`) its lock and
    venv."""
    locations = load_locations()
    check_stem(stem, locations)
    names = names_for(max((number_of(env) for env in locations), default=0) + 1, stem)
    folder = ROOT / names["folder"]
    if folder.exists():
        raise LocationError(f"{names['folder']}/ already exists")
    workspace = _add_to_workspace(names["folder"])
    try:
        _render_template(folder, names, stem)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    atomic_write_text(ROOT / WORKSPACE_FILE, workspace)
    env = find(names["location"], load_locations())
    write_all(load_locations())
    if build:
        lock_environment(env)
        build_environment(env, force=True)
    return env


def _text_files(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in _TEXT_SUFFIXES and not _SKIP_PARTS.intersection(path.parts)
    ]


def _tracked_text_files() -> list[Path]:
    """The repository's text files (git's list where there is one), outside venvs and caches."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    paths = [ROOT / line for line in listing.stdout.splitlines()] if listing.returncode == 0 else _text_files(ROOT)
    return [p for p in paths if p.is_file() and p.suffix in _TEXT_SUFFIXES and not _SKIP_PARTS.intersection(p.parts)]


def rename_location(old: str, new_stem: str, build: bool = True) -> Environment:
    """Rename location `old` (name, folder or stem) to `new_stem`, keeping its number: folder, package, distribution,
    location name, every reference in the repository's text files, dg.toml, the derived files; then rebuild its
    venv (a venv cannot move). Asset keys do not change, so asset history stays."""
    locations = load_locations()
    env = find(old, locations)
    check_stem(new_stem, tuple(e for e in locations if e != env))
    if new_stem == env.stem:
        raise LocationError(f"{env.name} is already called {new_stem!r}")
    number = number_of(env)
    before, after = names_for(number, env.stem), names_for(number, new_stem)
    if (ROOT / after["folder"]).exists():
        raise LocationError(f"{after['folder']}/ already exists")
    # Longest names first, each as a whole word: `2_model_code_location` before `model_code_location` before `2_model`.
    replacements = [
        (re.compile(rf"(?<![\w-]){re.escape(before[what])}(?![\w-])"), after[what])
        for what in ("folder", "package", "distribution", "location")
    ]
    # A venv cannot move (absolute paths inside); a linked one belongs to someone else: drop the link only.
    if env.venv.is_symlink():
        env.venv.unlink()
    else:
        shutil.rmtree(env.venv, ignore_errors=True)
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        changed = text
        for pattern, replacement in replacements:
            changed = pattern.sub(replacement, changed)
        if changed != text:
            path.write_text(changed, encoding="utf-8", errors="surrogateescape")
    (ROOT / before["folder"] / before["package"]).rename(ROOT / before["folder"] / after["package"])
    (ROOT / before["folder"]).rename(ROOT / after["folder"])
    for egg_info in (ROOT / after["folder"]).glob("*.egg-info"):
        shutil.rmtree(egg_info)
    renamed = find(after["location"], load_locations())
    write_all(load_locations())
    if build:
        build_environment(renamed, force=True)
    return renamed
