"""The {{ names.location }} code location: everything under `defs/`, loaded as a `dg` project."""

from shared_code_location.runtime.loader import load_location

defs = load_location(__file__)
