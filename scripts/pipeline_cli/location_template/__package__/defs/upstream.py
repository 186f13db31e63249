"""The assets of other locations this one reads, declared from the shared contract (they materialize them)."""

import dagster as dg

from shared_code_location.contract.asset_keys import {{ upstream }}


@dg.definitions
def upstream() -> dg.Definitions:
    """Specs of the upstream assets, so that lineage, staleness and automation cross the location boundary."""
    return dg.Definitions(assets=[{{ upstream }}.spec()])
