"""The assets this location reads, declared from the shared contract (the ETL and model locations own them)."""

import dagster as dg

from shared_code_location.contract.asset_keys import TEST_TOKENS, TRAIN_TOKENS, TRAINED_MODEL, VOCABULARY


@dg.definitions
def upstream() -> dg.Definitions:
    """Specs of the upstream assets, so that lineage and staleness cross the location boundary."""
    return dg.Definitions(assets=[TRAINED_MODEL.spec(), VOCABULARY.spec(), TRAIN_TOKENS.spec(), TEST_TOKENS.spec()])
