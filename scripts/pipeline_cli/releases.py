"""`cli.py releases`: list the releases, promote one, roll back; the work is the deploy location's
(`python -m <package>.releases`), run in its venv like `serve`: the CLI imports no location's code."""

from __future__ import annotations

import subprocess

from pipeline_cli.instance import dagster_env
from pipeline_cli.locations import LOCATIONS, Environment, LocationError

MODULE = "releases"


def releases_location() -> Environment:
    """The location with a `releases` module (the deploy location)."""
    found = [env for env in LOCATIONS if (env.path / env.package / f"{MODULE}.py").is_file()]
    if len(found) != 1:
        raise LocationError(f"expected one location with a `{MODULE}` module, found {[env.name for env in found]}")
    return found[0]


def run_releases(*args: str) -> int:
    """Run `python -m <package>.releases ARGS` in that location's venv; its exit status (its output is the user's)."""
    env = releases_location()
    command = [str(env.python), "-m", f"{env.package}.{MODULE}", *args]
    return subprocess.run(command, env=dagster_env(), cwd=env.path).returncode
