"""The 4_deploy code location: everything under `defs/`, loaded as a `dg` project (see
`defs/serving_latency/defs.yaml` for a step declared in YAML)."""

from shared_code_location.runtime.loader import load_location

defs = load_location(__file__)
