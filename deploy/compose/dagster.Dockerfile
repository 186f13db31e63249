# The webserver and daemon image of the Compose topology (built from the repository root): Dagster, its PostgreSQL storage and Docker run launcher,
# from the root environment's lock; the instance settings and the workspace of code servers. No location code.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/dagster/home
COPY scripts/requirements.lock requirements.lock
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" && uv pip install -r requirements.lock
COPY deploy/compose/dagster.yaml deploy/compose/workspace.yaml ./
USER 10001
