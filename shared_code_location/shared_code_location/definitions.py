"""How every location loads: its `defs/` folder as a `dg` project, each asset linked to its source code."""

import warnings
from pathlib import Path

import dagster as dg


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
