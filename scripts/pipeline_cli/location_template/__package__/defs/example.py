"""`{{ stem }}/example`: replace it with this location's first stage (one module per stage, as in the others)."""

import dagster as dg

from shared_code_location.contract.asset_keys import {{ upstream }}, stored_as
from shared_code_location.contract.storage_formats import StorageFormat

#: This location's key prefix: its assets group by it in the lineage graph, and a key says which location owns it.
PREFIX = "{{ stem }}"
EXAMPLE_KEY = dg.AssetKey([PREFIX, "example"])


@dg.asset(
    key=EXAMPLE_KEY,
    group_name="{{ stem }}",
    # After the upstream asset in the lineage graph; to read its value, take it as an input instead
    # (`ins=inputs(report={{ upstream }})` from shared_code_location.contract.asset_keys).
    deps=[{{ upstream }}.key],
    metadata=stored_as(StorageFormat.JSON),
    code_version="1",
    kinds={"json"},
)
def example() -> dict:
    """Stored as JSON by the shared IO manager, like every value that crosses locations."""
    return {"location": "{{ names.location }}"}
