"""HTTP serving of a release with ONNX Runtime: `python -m deploy_code_location.serving --help`.

No torch and no Dagster are imported in the serving process.
"""
