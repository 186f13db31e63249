"""The 1_etl code location."""

import dagster as dg

from etl_code_location import checks
from etl_code_location.ingest import corpus
from etl_code_location.sensors import input_files_sensor
from etl_code_location.split import text_splits
from etl_code_location.tokenize_splits import tokenized_splits
from etl_code_location.vocabulary import vocabulary
from shared_code_location.resources import pipeline_resources

etl_job = dg.define_asset_job("etl_job", selection=dg.AssetSelection.groups("etl"), description="Ingest → tokens.")

defs = dg.Definitions(
    assets=[corpus, text_splits, vocabulary, tokenized_splits],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[etl_job],
    sensors=[input_files_sensor],
    # Steps are light; running them in one process saves a Python start-up per step.
    executor=dg.in_process_executor,
    # The IO manager also stores the op outputs inside the graph-backed corpus asset: pickle-free everywhere.
    resources=pipeline_resources("input_files"),
)
