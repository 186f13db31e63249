"""Files that list the locations, written from `locations.py` so that they can never disagree with dg.toml.

`python scripts/cli.py locations --sync` rewrites them; `--check` (and a test) fails when one is out of date.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import yaml

from pipeline_cli.bootstrap import ROOT
from pipeline_cli.locations import Environment

#: Where the Dagster+ image puts the repository (see Dockerfile).
IMAGE_ROOT = "/opt/dagster/app"


_GENERATED = "Generated from dg.toml by `python scripts/cli.py locations --sync`; edit dg.toml, not this file."


def _document(comment: str, data: dict) -> str:
    header = "".join(f"# {line}\n" for line in textwrap.wrap(f"{_GENERATED} {comment}", 114))
    return header + yaml.safe_dump(data, sort_keys=False, width=120)


def workspace_yaml(locations: tuple[Environment, ...]) -> str:
    """workspace.yaml: each location loaded from its own venv."""
    entries = [
        {
            "python_module": {
                "module_name": env.module,
                "location_name": env.name,
                "working_directory": env.folder,
                "executable_path": f"{env.folder}/.venv/bin/python",
            }
        }
        for env in locations
    ]
    comment = (
        "For Dagster's own tools: `dagster dev -w workspace.yaml`, `dagster-webserver -w workspace.yaml`; each "
        "location loads in its own venv. (`cli.py dev` starts the code servers itself, all at once, and writes its "
        "own workspace of gRPC servers under the instance folder.) Relative paths are resolved against this folder."
    )
    return _document(comment, {"load_from": entries})


def dagster_cloud_yaml(locations: tuple[Environment, ...]) -> str:
    """dagster_cloud.yaml (Dagster+ hybrid): one image from the repository root, each location in its own venv."""
    entries = [
        {
            "location_name": env.name,
            "code_source": {"module_name": env.module},
            "working_directory": f"{IMAGE_ROOT}/{env.folder}",
            "executable_path": f"{IMAGE_ROOT}/{env.folder}/.venv/bin/python",
        }
        for env in locations
    ]
    comment = (
        "Dagster+ (hybrid): one image built from the repository root (see Dockerfile) holds every location's own "
        "virtual environment, so each build sees shared_code_location/ and each location still runs with its own "
        "dependencies. Replace `registry` with your container registry."
    )
    build = {"directory": ".", "registry": "your-registry.example.com/dagster-ml-pipeline"}
    return _document(comment, {"defaults": {"build": build}, "locations": entries})


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
