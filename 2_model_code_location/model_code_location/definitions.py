"""The 2_model code location: everything under `defs/`, loaded as a `dg` project (see `defs/experiments/defs.yaml`)."""

from shared_code_location.runtime.loader import load_location

defs = load_location(__file__)
