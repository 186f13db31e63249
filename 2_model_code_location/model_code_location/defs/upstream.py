"""The ETL's assets this location reads, declared from the shared contract (another location materializes them)."""

import dagster as dg

from shared_code_location.contract.asset_keys import TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY


@dg.definitions
def upstream() -> dg.Definitions:
    """Specs of the upstream assets, so that lineage and staleness cross the location boundary."""
    return dg.Definitions(assets=[VOCABULARY.spec(), TRAIN_TOKENS.spec(), VALIDATION_TOKENS.spec()])
