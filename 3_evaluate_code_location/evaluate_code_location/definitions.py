"""The 3_evaluate code location: everything under `defs/`, loaded as a `dg` project."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
