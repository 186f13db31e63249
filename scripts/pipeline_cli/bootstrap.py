"""The root environment (.venv): created from bare Python by `setup`, then every command re-runs inside it.

Standard library only: this runs before click, uv or anything else is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOT_VENV = ROOT / ".venv"
ROOT_PYTHON = ROOT_VENV / "bin" / "python"
ROOT_REQUIREMENTS = ROOT / "scripts" / "requirements.lock"
UV = ROOT_VENV / "bin" / "uv"
#: The project's pins, one list (see pins.py).
PINS_FILE = ROOT / "pins.txt"


def read_pin_file(path: Path = PINS_FILE) -> dict[str, str]:
    """`{name: version}` of a list of `name==version` lines (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


#: The uv that bootstraps the root environment and that the images copy.
UV_VERSION = read_pin_file()["uv"]
#: Installed into .venv without its dependencies, for its standard-library-only modules (settings, net).
SHARED_PACKAGE = ROOT / "shared_code_location"


def pip_settings() -> dict[str, list[str]]:
    """The package sources of the user's pip configuration: `index-url`, `extra-index-url` and `find-links`, each
    a list (pip.conf files, then `PIP_*` variables, later ones overriding earlier ones, as pip reads them)."""
    listing = subprocess.run(
        [str(ROOT_PYTHON), "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in _PIP_SOURCES:
            settings[option] = value.strip().strip("'\"")  # later lines (env, user) override earlier ones
    for option in _PIP_SOURCES:
        env_value = os.environ.get("PIP_" + option.upper().replace("-", "_"))
        if env_value:
            settings[option] = env_value
    return {option: settings.get(option, "").split() for option in _PIP_SOURCES}


_PIP_SOURCES = ("index-url", "extra-index-url", "find-links")


def pip_index_flags(find_links: bool = True) -> list[str]:
    """uv flags that mirror the user's pip configuration (index-url, extra-index-url, find-links).

    uv does not read pip.conf or PIP_* variables; without this, a machine whose packages come from a mirror or a
    local wheel folder would resolve differently under uv than under pip. `unsafe-best-match` is pip's own rule:
    the best version across all indexes, not the first index that has the package. Without `find_links`, the
    wheel folders are left out (the CUDA lock must not pick a CPU build of torch that a folder holds).
    """
    sources = pip_settings()
    flags = ["--index-strategy", "unsafe-best-match"]
    for url in sources["index-url"][-1:]:
        flags += ["--default-index", url]
    for url in sources["extra-index-url"]:
        flags += ["--index", url]
    for location in sources["find-links"] if find_links else []:
        flags += ["--find-links", location]
    return flags


def install_root_environment() -> None:
    """Create .venv, install uv into it with pip (which reads the user's pip configuration), then the root
    requirements and the shared package (without its dependencies) with uv."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- this runs on whatever Python the user has
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not UV.exists():
        print(f"bootstrapping the root environment in {ROOT_VENV.name}/ (uv {UV_VERSION}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ROOT_VENV)], check=True)
        pip = [str(ROOT_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"uv=={UV_VERSION}"], check=True)
    stamp = ROOT_VENV / ".setup-fingerprint"
    wanted = ROOT_REQUIREMENTS.read_bytes() + (SHARED_PACKAGE / "pyproject.toml").read_bytes()
    if stamp.exists() and stamp.read_bytes() == wanted:
        return  # unchanged since the last setup
    install = [str(UV), "pip", "install", "--quiet", *pip_index_flags(), "--python", str(ROOT_PYTHON)]
    subprocess.run([*install, "-r", str(ROOT_REQUIREMENTS)], check=True)
    subprocess.run([*install, "--no-deps", "-e", str(SHARED_PACKAGE)], check=True)
    stamp.write_bytes(wanted)


def in_root_venv() -> bool:
    """Whether this process runs on .venv's Python."""
    return Path(sys.prefix).resolve() == ROOT_VENV.resolve()


def bare_help(command: str) -> str:
    """`cli.py COMMAND --help` before .venv exists (click is not installed yet): the command's usage, docstring and
    options, read from commands.py without importing it, so that asking for help installs nothing."""
    import ast
    import textwrap

    tree = ast.parse((Path(__file__).parent / "commands.py").read_text(encoding="utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == command)
    options = [("-h, --help", "Show this message and exit.")]
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "option":
            flags = [a.value for a in decorator.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            text = next((k.value.value for k in decorator.keywords if k.arg == "help"), "")
            options.insert(-1, (", ".join(flags), text))
    usage = f"Usage: cli.py {command} [OPTIONS]"
    body = textwrap.indent(ast.get_docstring(function) or "", "  ")
    return "\n".join([usage, "", body, "", "Options:", *(f"  {flag:<12} {text}" for flag, text in options)])


def enter_root_venv(commands: str) -> None:
    """Re-run this command inside .venv (creating it first for `setup`, unless only its help is asked for), or exit
    saying how to set up."""
    if in_root_venv():
        return
    if sys.argv[1:2] == ["setup"]:
        if not ROOT_PYTHON.exists() and {"-h", "--help"} & set(sys.argv[2:]):
            print(bare_help("setup"))
            sys.exit(0)
        install_root_environment()
    if ROOT_PYTHON.exists():
        os.execv(str(ROOT_PYTHON), [str(ROOT_PYTHON), *sys.argv])
    sys.exit(f"This project is not set up yet. Run:\n\n    python scripts/cli.py setup\n\nCommands: {commands}.")
