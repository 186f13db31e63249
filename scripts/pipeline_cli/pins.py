"""The project's pins, one list: `pins.txt` at the repository root, one `name==version` for every package that a
pyproject or requirements file of the project pins.

Those files write the same versions (each stays installable on its own: a location that moves to a repository of
its own keeps its pins); `check` names any that differs, and `cli.py lint` fails on it. Every lock is resolved with
the list as constraints. `cli.py lock --upgrade` moves the list to the newest versions that resolve together (the
newest Dagster release that every Dagster library pinned here has, the newest PyTorch with a CPU build the machine
can reach) and writes them into every file, then re-locks.
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from pathlib import Path

from pipeline_cli.bootstrap import PINS_FILE, ROOT, read_pin_file

#: A requirement with an exact pin: `name[extras]==version`, inside TOML strings or on a requirements line.
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[^\]]*\])?==(?P<version>[^\s\"',;#]+)")


def normalized(name: str) -> str:
    """A distribution's name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = PINS_FILE) -> dict[str, str]:
    """`{normalized name: version}` of the list."""
    return {normalized(name): version for name, version in read_pin_file(path).items()}


def pinned_files() -> list[Path]:
    """Every file that pins packages: each environment's pyproject, the root environment's, the images' and the
    test-only tools' requirements (`*.in`)."""
    from pipeline_cli.environments import IMAGE_REQUIREMENTS, TEST_REQUIREMENTS
    from pipeline_cli.locations import ENVIRONMENTS

    files = [env.path / "pyproject.toml" for env in ENVIRONMENTS]
    files += [ROOT / "scripts" / "requirements.in", *(ROOT / s for s in (*IMAGE_REQUIREMENTS, *TEST_REQUIREMENTS))]
    files += [source for env in ENVIRONMENTS for source in sorted(env.path.glob("requirements-*.in"))]
    return [path for path in files if path.is_file()]


def requirements_of(path: Path) -> list[str]:
    """The requirement strings of a pyproject (dependencies and every extra) or a requirements file."""
    if path.name == "pyproject.toml":
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
        return [*project.get("dependencies", []), *(r for e in project.get("optional-dependencies", {}).values()
                                                     for r in e)]  # fmt: skip
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def file_pins(path: Path) -> list[tuple[str, str, str]]:
    """(name, extras, version) of every exact pin in `path`."""
    found = []
    for requirement in requirements_of(path):
        match = _PIN.fullmatch(requirement.strip())
        if match:
            found.append((match["name"], match["extras"] or "", match["version"]))
    return found


def mismatches(pins: dict[str, str] | None = None) -> list[str]:
    """Where a file pins a version the list does not, or a package the list lacks; empty when all agree."""
    pins = read_pins() if pins is None else pins
    problems = []
    for path in pinned_files():
        for name, _, version in file_pins(path):
            expected = pins.get(normalized(name))
            where = path.relative_to(ROOT)
            if expected is None:
                problems.append(f"{where}: {name}=={version} is not in {PINS_FILE.name}")
            elif expected != version:
                problems.append(f"{where}: {name}=={version}, but {PINS_FILE.name} says {expected}")
    return problems


def write_into_files(pins: dict[str, str]) -> list[Path]:
    """Write the list's versions into every pinned file (the text edited in place); the files changed."""
    changed = []
    for path in pinned_files():
        text = path.read_text(encoding="utf-8")

        def repin(match: re.Match) -> str:
            version = pins.get(normalized(match["name"]), match["version"])
            return f"{match['name']}{match['extras'] or ''}=={version}"

        new = _PIN.sub(repin, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def write_pins(pins: dict[str, str], path: Path = PINS_FILE) -> None:
    """The list, sorted, under its header (kept from the file)."""
    header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    body = [f"{name}=={version}" for name, version in sorted(pins.items())]
    path.write_text("\n".join([*header, *body]) + "\n", encoding="utf-8")


def newest_pins() -> dict[str, str]:
    """The newest versions of every pinned package that resolve together (every file's requirements at once,
    Python 3.11), PyTorch held to the newest version whose CPU build the machine can reach."""
    from pipeline_cli.environments import cpu_torch_flags, newest_cpu_torch, uv

    pins = read_pins()
    loose = {}
    for path in pinned_files():
        for name, extras, _ in file_pins(path):
            key = normalized(name)
            loose[key] = extras or loose.get(key, "")  # one line per package, with its extras
    torch = newest_cpu_torch()
    lines = [f"{name}{extras}" for name, extras in sorted(loose.items()) if name != "torch"]
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / "everything.in", Path(folder) / "everything.txt"
        source.write_text("\n".join([*lines, f"torch=={torch}+cpu"]) + "\n")
        from pipeline_cli.bootstrap import pip_index_flags

        uv("pip", "compile", *pip_index_flags(), *cpu_torch_flags(f"{torch}+cpu"), "--python-version", "3.11",
           "--no-header", str(source), "-o", str(output))  # fmt: skip
        resolved = {normalized(n): v for n, v in re.findall(r"^(\S+)==(\S+)$", output.read_text(), re.MULTILINE)}
    return {name: resolved.get(name, version).split("+", 1)[0] for name, version in pins.items()}
