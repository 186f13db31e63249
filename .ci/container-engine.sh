#!/usr/bin/env bash
# A container engine for CI machines without Docker: Podman with its Docker-compatible API, so that the image and
# Compose tests (tests/test_images.py, tests/test_compose.py) build and run real containers. Prints the environment
# to use it: eval "$(bash .ci/container-engine.sh)". Idempotent. Where `docker info` already works, it does nothing.
#
# Why each step (each found by trying on a CI machine of this project):
# - Debian's podman with runc and the cgroupfs manager: crun refuses some kernels' hybrid cgroups.
# - Explicit ulimits: the engine's defaults (nofile 1048576, nproc from the host) can be refused by setrlimit.
# - No image registry may be reachable: the base images the Dockerfiles name (python:3.11-slim, uv's) are built
#   locally, from Debian's packages (mmdebstrap) and from the uv wheel on PyPI, when they cannot be pulled. The
#   machine's CA bundle goes in, so that uv inside a build reaches the package index as it does on the host.
# - The Docker-compatible API on a socket: the docker client, docker-py and Dagster's DockerRunLauncher use it.
set -euo pipefail
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  echo "# a Docker engine already answers: nothing to do"
  exit 0
fi
state=${CONTAINER_ENGINE_STATE:-/tmp/ml-pipeline-engine}
# The uv the Dockerfiles copy from uv's image: the pinned one (one home: pins.txt).
uv_version=$(sed -n 's/^uv==\(.*\)$/\1/p' "$(dirname "$0")/../pins.txt")
if [ -z "$uv_version" ]; then echo "container-engine.sh: no uv==VERSION line in pins.txt" >&2; exit 1; fi
mkdir -p "$state"
log="$state/setup.log"
need=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >>"$log" 2>&1
fi
conf="$state/containers.conf"
cat >"$conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$conf"

if ! podman image exists docker.io/library/python:3.11-slim \
    && ! podman pull -q docker.io/library/python:3.11-slim >>"$log" 2>&1; then
  mmdebstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates --format=tar bookworm \
    "$state/bookworm.tar" >>"$log" 2>&1
  podman import "$state/bookworm.tar" localhost/bookworm-python:3.11 >>"$log" 2>&1
  build="$state/python"; mkdir -p "$build"
  cp /etc/ssl/certs/ca-certificates.crt "$build/"
  cat >"$build/Containerfile" <<'EOF'
FROM localhost/bookworm-python:3.11
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -sf /usr/bin/python3.11 /usr/local/bin/python3 && ln -sf /usr/bin/python3.11 /usr/local/bin/python
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1 LANG=C.UTF-8
CMD ["python3"]
EOF
  podman build -q -t docker.io/library/python:3.11-slim "$build" >>"$log" 2>&1
fi
if ! podman image exists "ghcr.io/astral-sh/uv:$uv_version" \
    && ! podman pull -q "ghcr.io/astral-sh/uv:$uv_version" >>"$log" 2>&1; then
  build="$state/uv"; mkdir -p "$build"
  python3 -m pip download -q --no-deps "uv==$uv_version" -d "$build" >>"$log" 2>&1
  python3 - "$build" <<'EOF'
import os, sys, zipfile
folder = sys.argv[1]
wheel = next(name for name in os.listdir(folder) if name.endswith(".whl"))
with zipfile.ZipFile(os.path.join(folder, wheel)) as archive:
    for name in archive.namelist():
        if name.endswith(("/scripts/uv", "/scripts/uvx")):
            target = os.path.join(folder, os.path.basename(name))
            with open(target, "wb") as out:
                out.write(archive.read(name))
            os.chmod(target, 0o755)
EOF
  printf 'FROM scratch\nCOPY uv uvx /\n' >"$build/Containerfile"
  podman build -q -t "ghcr.io/astral-sh/uv:$uv_version" "$build" >>"$log" 2>&1
fi
socket="$state/podman.sock"
answers() { curl -sf --unix-socket "$socket" http://engine/_ping >/dev/null 2>&1; }
if ! answers; then
  rm -f "$socket"
  setsid podman system service --time=0 "unix://$socket" >>"$state/service.log" 2>&1 </dev/null &
  echo $! >"$state/service.pid"
  for _ in $(seq 1 100); do answers && break; sleep 0.2; done
fi
echo "export CONTAINERS_CONF=$conf"
echo "export DOCKER_HOST=unix://$socket"
