"""`new-location NAME` and `rename-location OLD NEW`: change the set of locations consistently, or not at all.

Both check every name first and change nothing when one is bad. Then they write the files, add or rename the entry
in dg.toml (the one list), regenerate the derived files, lock and build the venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import tomllib

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


def _shared_pins() -> dict[str, str]:
    """`{distribution: requirement}` for the shared package's pins, so a new location uses the same versions."""
    project = tomllib.loads((SHARED.path / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {re.split(r"[=<>!~\[ ]", pin, maxsplit=1)[0]: pin for pin in pins}


def _pyproject(names: dict[str, str], stem: str) -> str:
    pins = _shared_pins()
    dg_cli = pins["dagster"].replace("dagster==", "dagster-dg-cli==")
    dagster_cloud = pins["dagster"].replace("dagster==", "dagster-cloud==")  # Dagster+ runs it in the image
    # Runs load the instance, which `cli.py up` keeps in PostgreSQL: the same pin as the root environment's.
    dagster_postgres = next(
        line
        for line in (ROOT / "scripts" / "requirements.in").read_text().splitlines()
        if line.startswith("dagster-postgres==")
    )
    return f'''[project]
name = "{names["distribution"]}"
version = "0.1.0"
description = "{names["location"]}: describe what this location does."
requires-python = ">=3.10,<3.14"
dependencies = ["shared-code-location", "{pins["dagster"]}", "{dagster_cloud}", "{dagster_postgres}"]

[project.optional-dependencies]
test = ["{pins["pytest"]}"]
# `dg list defs`, `dg check yaml` and friends run in the project's own venv, where its code imports.
dev = ["{dg_cli}"]

[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[tool.setuptools.packages.find]
include = ["{names["package"]}*"]

[tool.uv.sources]
shared-code-location = {{ path = "../shared_code_location", editable = true }}

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{names["package"]}"
code_location_target_module = "{names["module"]}"
code_location_name = "{names["location"]}"

[tool.pytest.ini_options]
testpaths = ["tests"]
'''


def _definitions(names: dict[str, str], stem: str) -> str:
    return f'''"""The {names["location"]} code location. Add assets here, or in modules beside this one."""

import dagster as dg

from shared_code_location.resources import pipeline_resources
from shared_code_location.storage_formats import StorageFormat


@dg.asset(
    key=["{stem}", "example"],
    group_name="{stem}",
    metadata={{"storage_format": StorageFormat.JSON.value}},
    code_version="1",
)
def example() -> dict:
    """Replace me. Stored as JSON by the shared IO manager, like every value that crosses locations.

    To read another location's asset, declare it with `<KEY>.spec()` from `shared_code_location.asset_keys` in
    `defs` below and take it as an input: locations meet only through asset keys and the IO manager.
    """
    return {{"location": "{names["location"]}"}}


defs = dg.Definitions(
    assets=[example],
    resources=pipeline_resources(),
    executor=dg.in_process_executor,
)
'''


def _test(names: dict[str, str], stem: str) -> str:
    return f'''import dagster as dg

from {names["module"]} import defs, example
from shared_code_location.io_manager import PipelineIOManager


def test_definitions_load_and_the_example_asset_materializes(tmp_path):
    assert defs.resolve_asset_graph().get(dg.AssetKey(["{stem}", "example"])).is_materializable
    result = dg.materialize([example], resources={{"io_manager": PipelineIOManager(base_uri=str(tmp_path))}})
    assert result.success
    assert (tmp_path / "{stem}" / "example.json").read_text().startswith("{{")
'''


def _add_to_workspace(folder: str) -> str:
    text = (ROOT / WORKSPACE_FILE).read_text(encoding="utf-8")
    return text.rstrip("\n") + f'\n\n[[workspace.projects]]\npath = "{folder}"\n'


def new_location(stem: str, build: bool = True) -> Environment:
    """Scaffold location `stem` after the last one: package, pyproject with the shared pins, `Definitions` with
    one example asset, a test, its dg.toml entry, the derived files, then (with `build`) its lock and venv."""
    locations = load_locations()
    check_stem(stem, locations)
    names = names_for(max((number_of(env) for env in locations), default=0) + 1, stem)
    folder = ROOT / names["folder"]
    if folder.exists():
        raise LocationError(f"{names['folder']}/ already exists")
    workspace = _add_to_workspace(names["folder"])
    try:
        (folder / names["package"]).mkdir(parents=True)
        (folder / "tests").mkdir()
        (folder / "pyproject.toml").write_text(_pyproject(names, stem))
        (folder / names["package"] / "__init__.py").write_text(f'"""The {names["location"]} code location."""\n')
        (folder / names["package"] / "definitions.py").write_text(_definitions(names, stem))
        (folder / "tests" / f"test_{stem}_definitions.py").write_text(_test(names, stem))
    except OSError:
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
