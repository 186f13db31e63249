"""`{{ stem }}/example`: replace it with this location's first stage (one module per stage, as in the others)."""

import dagster as dg

from shared_code_location.asset_keys import {{ upstream }}
from shared_code_location.storage_formats import StorageFormat

EXAMPLE_KEY = dg.AssetKey(["{{ stem }}", "example"])


@dg.asset(
    key=EXAMPLE_KEY,
    group_name="{{ stem }}",
    # After the upstream asset in the lineage graph; to read its value, take it as an input instead
    # (`ins=inputs(report={{ upstream }})` from shared_code_location.asset_keys).
    deps=[{{ upstream }}.key],
    metadata={"storage_format": StorageFormat.JSON.value},
    code_version="1",
    kinds={"json"},
)
def example() -> dict:
    """Stored as JSON by the shared IO manager, like every value that crosses locations."""
    return {"location": "{{ names.location }}"}
