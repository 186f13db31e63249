"""The assets this location reads, declared from the shared contract (the other locations own them)."""

import dagster as dg

from shared_code_location.contract.asset_keys import EVALUATION_REPORT, TRAINED_MODEL, VOCABULARY


@dg.definitions
def upstream() -> dg.Definitions:
    """Specs of the upstream assets, so that lineage and staleness cross the location boundary."""
    return dg.Definitions(assets=[TRAINED_MODEL.spec(), VOCABULARY.spec(), EVALUATION_REPORT.spec()])
