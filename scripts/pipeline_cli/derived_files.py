"""Files that list the locations, written from `locations.py` so that they can never disagree with dg.toml.

`python scripts/cli.py locations --sync` rewrites them; `--check` (and a test) fails when one is out of date.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline_cli.bootstrap import ROOT
from pipeline_cli.locations import Environment

#: Where the Dagster+ image puts the repository (see Dockerfile).
IMAGE_ROOT = "/opt/dagster/app"


def workspace_yaml(locations: tuple[Environment, ...]) -> str:
    """workspace.yaml: each location loaded from its own venv."""
    lines = [
        "# Generated from dg.toml by `python scripts/cli.py locations --sync`; edit dg.toml, not this file.",
        "# For Dagster's own tools: `dagster dev -w workspace.yaml`, `dagster-webserver -w workspace.yaml`. Each",
        "# location loads in its own venv. (`cli.py dev` starts the code servers itself, all at once, and writes its",
        "# own workspace of gRPC servers under the instance folder.) Relative paths are resolved against this folder.",
        "load_from:",
    ]
    for env in locations:
        lines += [
            "  - python_module:",
            f"      module_name: {env.module}",
            f"      location_name: {env.name}",
            f"      working_directory: {env.folder}",
            f"      executable_path: {env.folder}/.venv/bin/python",
        ]
    return "\n".join(lines) + "\n"


def dagster_cloud_yaml(locations: tuple[Environment, ...]) -> str:
    """dagster_cloud.yaml (Dagster+ hybrid): one image from the repository root, each location in its own venv."""
    lines = [
        "# Generated from dg.toml by `python scripts/cli.py locations --sync`; edit dg.toml, not this file.",
        "# Dagster+ (hybrid): one image built from the repository root (see Dockerfile) holds every location's own",
        "# virtual environment, so each build sees shared_code_location/ and each location still runs with its own",
        "# dependencies. Replace `registry` with your container registry.",
        "defaults:",
        "  build:",
        "    directory: .",
        "    registry: your-registry.example.com/dagster-ml-pipeline",
        "",
        "locations:",
    ]
    for env in locations:
        lines += [
            f"  - location_name: {env.name}",
            "    code_source:",
            f"      module_name: {env.module}",
            f"    working_directory: {IMAGE_ROOT}/{env.folder}",
            f"    executable_path: {IMAGE_ROOT}/{env.folder}/.venv/bin/python",
        ]
    return "\n".join(lines) + "\n"


DERIVED_FILES: dict[str, Callable[[tuple[Environment, ...]], str]] = {
    "workspace.yaml": workspace_yaml,
    "dagster_cloud.yaml": dagster_cloud_yaml,
}


def out_of_date(locations: tuple[Environment, ...], root=ROOT) -> list[str]:
    """The derived files whose content differs from what the locations give."""
    return [
        name
        for name, render in DERIVED_FILES.items()
        if not (root / name).exists() or (root / name).read_text(encoding="utf-8") != render(locations)
    ]


def write_all(locations: tuple[Environment, ...], root=ROOT) -> list[str]:
    """Rewrite every derived file that is out of date; the names of those rewritten."""
    from pipeline_cli.environments import atomic_write_text

    changed = out_of_date(locations, root)
    for name in changed:
        atomic_write_text(root / name, DERIVED_FILES[name](locations))
    return changed
