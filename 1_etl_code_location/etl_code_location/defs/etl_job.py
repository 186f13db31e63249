"""`etl_job`: ingest → tokens in one run, what the input sensor launches."""

import dagster as dg

etl_job = dg.define_asset_job("etl_job", selection=dg.AssetSelection.groups("etl"), description="Ingest → tokens.")
