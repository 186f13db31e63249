{#- The HTTP serving image; rendered into <the location with a serving package>/serving.Dockerfile. -#}
# The serving image: the HTTP API on ONNX Runtime, without PyTorch or Dagster ({{ location.folder }}/requirements-serving.lock).
# Build from the repository root: docker build -f {{ location.folder }}/serving.Dockerfile -t {{ serving_image }} .
# It serves the latest good release of ML_PIPELINE_OUTPUT_DIR (a folder, or object storage), or --release.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{{ uv_version }} /uv /usr/local/bin/uv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    ML_PIPELINE_PROJECT_ROOT={{ image_root }} ML_PIPELINE_OUTPUT_DIR=/data/releases
WORKDIR {{ image_root }}
COPY {{ location.folder }}/requirements-serving.lock {{ location.folder }}/requirements-serving.lock
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" \
    && uv pip sync {{ location.folder }}/requirements-serving.lock
COPY dg.toml dg.toml
COPY shared_code_location/ shared_code_location/
COPY {{ location.folder }}/ {{ location.folder }}/
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps ./shared_code_location ./{{ location.folder }}
RUN useradd --uid 10001 serving
USER 10001
EXPOSE {{ serving_port }}
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{ serving_port }}/health', timeout=2)"]
CMD ["python", "-m", "{{ location.package }}.serving", "--host", "0.0.0.0", "--port", "{{ serving_port }}"]
