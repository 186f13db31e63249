"""The ETL's jobs: one file at a time (what the input sensor launches per file), and the step that combines them."""

import dagster as dg

from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY
from shared_code_location.contract.asset_keys import TEST_TOKENS, TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY
from shared_code_location.contract.corpus_files import CORPUS_FILES

#: One input file: validate, normalize, split, tokenize into shards (a partition per file).
ingest_file_job = dg.define_asset_job(
    "ingest_file_job",
    selection=[FILE_TOKENS_KEY],
    partitions_def=CORPUS_FILES,
    description="One input file (a partition): validated, normalized, split and tokenized into shards.",
)

#: Every file's results into the vocabulary and the token manifests; cheap (reads no file, writes no token).
combine_job = dg.define_asset_job(
    "combine_job",
    selection=[VOCABULARY.key, TRAIN_TOKENS.key, VALIDATION_TOKENS.key, TEST_TOKENS.key],
    description="The vocabulary and the train / validation / test manifests, from every file's shards and counts.",
)
