# The serving image: the HTTP API on ONNX Runtime, without PyTorch or Dagster (requirements-serving.lock).
# Build from the repository root: docker build -f 4_deploy_code_location/serving.Dockerfile -t ml-pipeline-serving .
# It serves the latest good release of ML_PIPELINE_OUTPUT_DIR (mount the releases there, read-only), or --release.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    ML_PIPELINE_PROJECT_ROOT=/opt/dagster/app ML_PIPELINE_OUTPUT_DIR=/data/releases
WORKDIR /opt/dagster/app
COPY 4_deploy_code_location/requirements-serving.lock 4_deploy_code_location/requirements-serving.lock
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" \
    && uv pip install -r 4_deploy_code_location/requirements-serving.lock
COPY dg.toml dg.toml
COPY shared_code_location/ shared_code_location/
COPY 4_deploy_code_location/ 4_deploy_code_location/
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps ./shared_code_location ./4_deploy_code_location
USER 10001
EXPOSE 8000
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["python", "-m", "deploy_code_location.serving", "--host", "0.0.0.0", "--port", "8000"]
