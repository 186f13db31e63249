"""How every location loads: its `defs/` folder as a `dg` project, each asset linked to its source code."""

import tomllib
import warnings
from pathlib import Path

import dagster as dg


def location_name(project_file: str) -> str:
    """The Dagster location name of the `dg` project that holds `project_file`: its pyproject.toml's
    `[tool.dg.project] code_location_name`, the one place a location's name is written."""
    for folder in Path(project_file).resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("dg", {})
            if "code_location_name" in project.get("project", {}):
                return project["project"]["code_location_name"]
    raise LookupError(f"no pyproject.toml with [tool.dg.project] code_location_name above {project_file}")


def load_location(definitions_file: str) -> dg.Definitions:
    """The `Definitions` of the `dg` project that holds `definitions_file` (its `defs/` folder: Python modules and
    component YAML), with every Python-defined asset linked to the file and line that defines it (the UI shows the
    link; component assets already link to their YAML)."""
    defs = dg.load_from_defs_folder(path_within_project=Path(definitions_file).parent)
    with warnings.catch_warnings():
        # Marked beta; Dagster is pinned exactly, and a test checks the references.
        warnings.simplefilter("ignore", dg.BetaWarning)
        assets = dg.with_source_code_references(list(defs.assets or []))
    return dg.Definitions(
        assets=assets,
        asset_checks=defs.asset_checks,
        schedules=defs.schedules,
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
        component_tree=defs.component_tree,
    )
