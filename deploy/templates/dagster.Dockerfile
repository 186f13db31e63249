{#- The webserver's and daemon's image in Compose; rendered into deploy/compose/dagster.Dockerfile. -#}
# The webserver and daemon of the Compose topology (built from the repository root): Dagster, its PostgreSQL storage
# and Docker run launcher (deploy/compose/requirements.lock), the instance settings and the workspace of code
# servers. No location code: each location is its own code-server container.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{{ uv_version }} /uv /usr/local/bin/uv
# DAGSTER_DISABLE_TELEMETRY: the webserver and daemon upload $DAGSTER_HOME/logs/ to Dagster unless it is set, whatever
# dagster.yaml's `telemetry: enabled: false` says (docs/settings.md).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    DAGSTER_HOME=/opt/dagster/home DAGSTER_DISABLE_TELEMETRY=1
WORKDIR /opt/dagster/home
COPY deploy/compose/requirements.lock requirements.lock
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" && uv pip sync requirements.lock
COPY deploy/compose/dagster.yaml deploy/compose/workspace.yaml ./
RUN useradd --create-home --uid 10001 dagster && chown dagster /opt/dagster/home
USER 10001
