"""The 4_deploy code location: everything under `defs/`, loaded as a `dg` project (see
`defs/serving_latency/defs.yaml` for a step declared in YAML)."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
