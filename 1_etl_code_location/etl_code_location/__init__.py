"""1_etl: ingest the text corpus, split it, build the vocabulary from the train split, tokenize."""
