{#- The image of one code location; `cli.py locations --sync` renders it into each <location>/Dockerfile.
    `location`: name, folder, package, module, image, torch (the default PyTorch build, or none without torch). -#}
# The image of code location {{ location.name }}. Build it from the repository root, so that the shared package is in
# the context: docker build -f {{ location.folder }}/Dockerfile -t {{ location.image }} .
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{{ uv_version }} /uv /usr/local/bin/uv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    DAGSTER_HOME=/opt/dagster/home ML_PIPELINE_PROJECT_ROOT={{ image_root }} ML_PIPELINE_DEPLOYMENT=production
WORKDIR {{ image_root }}
{%- if location.torch %}
# The PyTorch build: `cuda` (PyPI's, with its CUDA libraries, for GPU nodes) or `cpu` (PyTorch's CPU build, a fifth
# of the size); choose with `--build-arg TORCH=...`. TORCH_CPU_INDEX is where the CPU build comes from (a mirror).
ARG TORCH={{ location.torch }}
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# The locks before the code: a code change reuses this layer (PyTorch included) instead of reinstalling it.
COPY {{ location.folder }}/requirements.lock {{ location.folder }}/requirements-cuda.lock {{ location.folder }}/
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" \
    && if [ "$TORCH" = cuda ]; then uv pip sync {{ location.folder }}/requirements-cuda.lock; \
       else uv pip sync --index "$TORCH_CPU_INDEX" --index-strategy unsafe-best-match {{ location.folder }}/requirements.lock; fi
{%- else %}
# The lock before the code: a code change reuses this layer instead of reinstalling every dependency.
COPY {{ location.folder }}/requirements.lock {{ location.folder }}/requirements.lock
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" && uv pip sync {{ location.folder }}/requirements.lock
{%- endif %}
COPY dg.toml dg.toml
COPY shared_code_location/ shared_code_location/
COPY {{ location.folder }}/ {{ location.folder }}/
{%- if location.corpus %}
# The example corpus, so that a fresh deployment has something to ingest (ML_PIPELINE_INPUT_DIR points elsewhere).
COPY example_input_files_resource/ example_input_files_resource/
{%- endif %}
# Editable: a dg project loads its defs/ folder (YAML included) from the project folder, beside its pyproject.toml.
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps ./shared_code_location --editable ./{{ location.folder }}
RUN useradd --create-home --uid 10001 dagster && mkdir -p /opt/dagster/home && chown dagster /opt/dagster/home
USER 10001
EXPOSE {{ grpc_port }}
CMD [{{ location.grpc_command | map("tojson") | join(", ") }}]
