"""The 2_model code location: everything under `defs/`, loaded as a `dg` project (see `defs/experiments/defs.yaml`)."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
