"""The code locations, declared once: the `dg` workspace (dg.toml) lists each project's folder, in pipeline order,
and each project's pyproject.toml names its package and its Dagster location (`[tool.dg.project]`).

Everything else that lists locations derives from this: the CLI, the tests, and every deployment file
`derived_files.py` renders (workspace and Dagster+ files, Compose, Helm values, Dockerfiles, container contexts).
A location's names follow one pattern, which `new-location` and `rename-location` keep and a test checks:
location `2_model`, folder `2_model_code_location`, package `model_code_location`, distribution
`model-code-location`.
"""

from __future__ import annotations

import keyword
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_cli.bootstrap import ROOT

WORKSPACE_FILE = "dg.toml"
SHARED_FOLDER = "shared_code_location"
_SUFFIX = "_code_location"
_STEM = re.compile(r"[a-z][a-z0-9_]*")
#: Stems that would clash with the shared package, Python, Dagster or the test layout.
RESERVED_STEMS = frozenset({"shared", "dagster", "dg", "test", "tests", "scripts", "code", "location", "e2e"})


@dataclass(frozen=True)
class Environment:
    """One virtual environment: a code location's, or the shared package's (for its tests)."""

    name: str  # the Dagster location name, e.g. 2_model; "shared" for the shared package
    folder: str  # e.g. 2_model_code_location
    package: str | None  # the importable package; None for the shared package
    module: str | None = None  # the module holding `defs`
    deploy: dict = field(default_factory=dict, compare=False)  # [tool.ml_pipeline.deploy]: e.g. gpu = true

    @property
    def path(self) -> Path:
        return ROOT / self.folder

    @property
    def venv(self) -> Path:
        return self.path / ".venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def lock(self) -> Path:
        return self.path / "requirements.lock"

    @property
    def stem(self) -> str:
        """The name without its number: `model` for `2_model`."""
        return self.name.split("_", 1)[1] if self.package else self.name


SHARED = Environment("shared", SHARED_FOLDER, None)


class LocationError(ValueError):
    """A location name that cannot be used, or a workspace whose files disagree; the message says which."""


def names_for(number: int, stem: str) -> dict[str, str]:
    """Every name of location `stem` at position `number`, by the project's one pattern."""
    return {
        "location": f"{number}_{stem}",
        "folder": f"{number}_{stem}{_SUFFIX}",
        "package": f"{stem}{_SUFFIX}",
        "distribution": f"{stem}{_SUFFIX}".replace("_", "-"),
        "module": f"{stem}{_SUFFIX}.definitions",
    }


def check_stem(stem: str, taken: tuple[Environment, ...]) -> None:
    """Raise `LocationError` unless `stem` can name a new location: lower-case identifier, not starting with a
    digit (the CLI numbers locations itself), not a Python keyword, not reserved, not already used."""
    if not stem:
        raise LocationError("a location needs a name, e.g. `monitoring`")
    if stem[0].isdigit():
        raise LocationError(
            f"{stem!r} starts with a digit: give the name without its number (e.g. `monitoring`); the CLI numbers "
            "locations in pipeline order, and a package name cannot start with a digit"
        )
    if not _STEM.fullmatch(stem):
        raise LocationError(f"{stem!r} is not a valid name: use lower-case letters, digits and _ (e.g. feature_store)")
    if keyword.iskeyword(stem) or keyword.issoftkeyword(stem) or stem in RESERVED_STEMS:
        raise LocationError(f"{stem!r} is a reserved word; choose another name")
    if stem.endswith(_SUFFIX) or stem.endswith("_code"):
        raise LocationError(f"{stem!r}: leave out `{_SUFFIX}`, the CLI adds it")
    for env in taken:
        if stem == env.stem:
            raise LocationError(f"{stem!r} clashes with location {env.name} ({env.folder}/)")
    if (ROOT / f"{stem}{_SUFFIX}").exists():
        raise LocationError(f"{stem!r} clashes with the folder {stem}{_SUFFIX}/")


def project_folders(root: Path = ROOT) -> list[str]:
    """The project folders the `dg` workspace lists, in pipeline order."""
    try:
        workspace = tomllib.loads((root / WORKSPACE_FILE).read_text(encoding="utf-8"))
        return [project["path"] for project in workspace["workspace"]["projects"]]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as error:
        raise LocationError(f"{WORKSPACE_FILE}: cannot read [[workspace.projects]] paths ({error})") from error


def read_location(folder: str, root: Path = ROOT) -> Environment:
    """The location in `folder`, from its pyproject.toml's `[tool.dg.project]`."""
    pyproject = root / folder / "pyproject.toml"
    try:
        tool = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]
        project = tool["dg"]["project"]
        package = project["root_module"]
        return Environment(
            name=project["code_location_name"],
            folder=folder,
            package=package,
            module=project.get("code_location_target_module", f"{package}.definitions"),
            deploy=tool.get("ml_pipeline", {}).get("deploy", {}),
        )
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as error:
        raise LocationError(f"{folder}/pyproject.toml: cannot read [tool.dg.project] ({error!r})") from error


def load_locations(root: Path = ROOT) -> tuple[Environment, ...]:
    """Every code location, in pipeline order."""
    return tuple(read_location(folder, root) for folder in project_folders(root))


def number_of(env: Environment) -> int:
    """A location's number, its place in the pipeline: 2 for `2_model`."""
    head = env.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def pattern_problems(locations: tuple[Environment, ...]) -> list[str]:
    """Where a location's names break the project's pattern (numbers rising in pipeline order; a repository split
    off from this one keeps its numbers); empty when none do."""
    problems = []
    numbers = [number_of(env) for env in locations]
    if any(n < 1 for n in numbers) or numbers != sorted(set(numbers)):
        problems.append(f"location numbers must rise in dg.toml's order: {[env.name for env in locations]}")
    for number, env in zip(numbers, locations, strict=True):
        stem = env.name.split("_", 1)[-1]
        expected = names_for(number, stem)
        actual = {"location": env.name, "folder": env.folder, "package": env.package, "module": env.module}
        for what, value in actual.items():
            if value != expected[what]:
                problems.append(f"{env.folder}: {what} is {value!r}, expected {expected[what]!r}")
    return problems


LOCATIONS = load_locations()
ENVIRONMENTS = (SHARED, *LOCATIONS)


def find(name: str, candidates: tuple[Environment, ...] = ENVIRONMENTS) -> Environment:
    """The environment called `name` (location name, folder or stem); `LocationError` naming the choices."""
    for env in candidates:
        if name in (env.name, env.folder, env.stem):
            return env
    raise LocationError(f"unknown location {name!r}; choose one of {', '.join(e.name for e in candidates)}")
