# The Dagster+ hybrid image (dagster_cloud.yaml builds it from the repository root): the same per-location
# environments as `python scripts/cli.py setup`, from the same lock files.
FROM python:3.11-slim
WORKDIR /opt/dagster/app
COPY . .
RUN python scripts/cli.py setup
# Set ML_PIPELINE_STORAGE_URI (s3://bucket/prefix, gs://...) so that locations in separate containers share data.
ENV ML_PIPELINE_PROJECT_ROOT=/opt/dagster/app
