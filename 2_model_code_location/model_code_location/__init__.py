"""2_model: train a decoder-only transformer on the ETL tokens."""
