"""Where distributed training runs: an existing Ray cluster (`ML_PIPELINE_RAY_ADDRESS`: Compose's head service, a
KubeRay cluster's head), or by default a Ray cluster of one node on 127.0.0.1 that each training of more than one
worker starts for itself and stops when it ends, as `cli.py up` runs its own PostgreSQL.

The local cluster is Ray's own `ray start --head --block`, on the loopback interface, in a process of its own: Ray
picks its ports (only the three with fixed defaults are chosen free here: the GCS, the job API, the Ray Client),
keeps its files in a temporary folder, and stops what it started with `ray start` (its processes share its fate, and
a job's driver dies with its job). `ray start` itself stops with the process that started it, even one killed with
-9 (a Linux parent-death signal: Ray has no option for that). Ray's workers give up on a dead head only after a
minute, so `stop()` ends what is left of the cluster itself (its processes, found by the address in their
environment).

Why not `ray.init()` in the run's own process (what dagster-ray's `LocalRay` does): the run would become the
cluster's driver, which Ray aborts when the cluster's GCS dies; a cluster of its own process fails the run with a
`RayClusterError` instead. Jobs are submitted with dagster-ray's `PipesRayJobClient` to either kind of cluster.

No Ray import at module level: the location loads without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from shared_code_location import settings
from shared_code_location.runtime.net import free_port

#: The resource key of `RayCluster` in this location's definitions.
RAY_RESOURCE_KEY = "ray_cluster"
#: The local cluster's object store: the training exchanges only log lines through it (weights go to storage).
_OBJECT_STORE_BYTES = 200 * 1024 * 1024
#: Ray on loopback only: every process of the local cluster has it, and so must a driver that connects to the
#: cluster from outside a job (a benchmark) before it imports ray; Ray otherwise advertises the machine's outward
#: address. (Ray's name for it speaks of the platforms where loopback is its default.)
LOOPBACK_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: Seconds to wait for a cluster's job API to answer one request.
_PROBE_TIMEOUT = 5.0


class RayClusterError(RuntimeError):
    """A Ray cluster that cannot be used (unreachable, stopped, refused to start): the message names its address."""


def probe(address: str, timeout: float = _PROBE_TIMEOUT) -> dict:
    """The cluster's version answer (`/api/version`: Ray's version, the session); raises `OSError` if it does not
    answer within `timeout` seconds."""
    with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout) as response:
        return json.loads(response.read())


def job_api_address(address: str) -> str:
    """`address` as the job API's URL: `host:8265` gets `http://`; a Ray Client (`ray://`) address is refused."""
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise RayClusterError(
            f"{settings.RAY_ADDRESS.name}={address!r} is a Ray Client address; training is submitted as a Ray job: "
            "give the job API's address, http://HOST:8265 (the head's dashboard port)"
        )
    return address if "://" in address else f"http://{address}"


class LocalRayCluster:
    """A Ray cluster of one node on 127.0.0.1, started by `start()` (or `with`) and stopped by `stop()`.

    `num_cpus` and `num_gpus` are the resources it offers (GPUs: as many as Ray finds, by default). Use it as the
    default cluster of a training, as a test's cluster, or as a benchmark's.
    """

    def __init__(self, num_cpus: int, num_gpus: int | None = None):
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        # The ports this process must know, and the Ray Client's (it has a fixed default, 10001, and Ray refuses 0);
        # Ray picks the others.
        ports: list[int] = []
        while len(ports) < 3:
            if (port := free_port()) not in ports:
                ports.append(port)
        self.ports = dict(zip(("port", "dashboard-port", "ray-client-server-port"), ports, strict=True))
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None
        self.startup_seconds: float | None = None
        self._log = None

    @property
    def address(self) -> str:
        """The job API (the dashboard's HTTP address), what `ML_PIPELINE_RAY_ADDRESS` takes."""
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        """The cluster's bootstrap address, what `ray.init(address=...)` takes."""
        return f"127.0.0.1:{self.ports['port']}"

    def alive(self) -> bool:
        """Whether the cluster's `ray start` process still runs."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 180.0) -> LocalRayCluster:
        """Start the cluster and wait until its job API answers; raises `RayClusterError` with the end of Ray's
        output if it exits or does not answer within `timeout` seconds."""
        started = time.perf_counter()
        # Short: Ray's socket paths under it must stay within the 107 characters a Unix socket allows.
        self.folder = Path(tempfile.mkdtemp(prefix="ray-"))
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
            f"--num-cpus={self.num_cpus}", f"--object-store-memory={_OBJECT_STORE_BYTES}",
            f"--temp-dir={self.folder / 'ray'}", "--disable-usage-stats",
            *(f"--{flag}={port}" for flag, port in self.ports.items()),
            "--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0",
            *([f"--num-gpus={self.num_gpus}"] if self.num_gpus is not None else []),
        ]  # fmt: skip
        environment = os.environ | {
            # Every process of the cluster (and each job's driver) finds this cluster, not the latest one that
            # `ray start` recorded on the machine.
            "RAY_ADDRESS": self.gcs_address,
            **LOOPBACK_ENVIRONMENT,
            # A SIGTERM stops the node at once (the drain is for Serve replicas behind a load balancer).
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            # No idle workers started ahead: a training's actors carry its job's environment and cannot use them.
            "RAY_enable_worker_prestart": "0",
            # Jobs run `python`, this venv's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self._log = (self.folder / "ray-start.log").open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # its own process group: stop() signals `ray start` and what it started
            preexec_fn=_stop_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                output = self.output_tail()
                self.stop()
                raise RayClusterError(f"the local Ray cluster exited while starting:\n{output}")
            with contextlib.suppress(OSError, ValueError):
                probe(self.address, timeout=1.0)
                self.startup_seconds = time.perf_counter() - started
                return self
            time.sleep(0.2)
        output = self.output_tail()
        self.stop()
        raise RayClusterError(
            f"the local Ray cluster at {self.address} did not answer within {timeout:.0f} s:\n{output}"
        )

    def output_tail(self, lines: int = 20) -> str:
        """The last lines `ray start` printed."""
        path = self.folder / "ray-start.log" if self.folder else None
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def processes(self) -> list[int]:
        """The live processes of this cluster: those whose environment names its address (`ray start` and what it
        started, Ray's workers and the jobs' drivers, which sit in process groups of their own)."""
        return cluster_processes(self.gcs_address)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the cluster and remove its files: SIGTERM to `ray start`, which stops what it started, up to
        `timeout` s for it. Ray's workers and drivers leave by themselves only once they give up on a dead head
        (up to a minute): what is left two seconds later (or at once, if the cluster had already died) gets
        SIGKILL."""
        if self.process is not None:
            grace = 0.0
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=timeout)
                grace = 2.0
            deadline = time.monotonic() + grace
            while (left := self.processes()) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class RayConnection:
    """A cluster a training can be submitted to: its job API, the Python its jobs run, the local cluster if any."""

    address: str
    python: str
    local: LocalRayCluster | None = None

    def failure(self, error: BaseException, what: str) -> RayClusterError | None:
        """A `RayClusterError` naming the address if the cluster no longer answers (so it caused `error`); None if
        it still does (then `error` is the training's own)."""
        if self.local is not None and not self.local.alive():
            cause = f"its processes exited ({error})"
        else:
            try:
                probe(self.address)
                return None
            except OSError as unreachable:
                cause = f"it stopped answering ({unreachable}; {error})"
        source = "the local Ray cluster" if self.local else f"the Ray cluster ({settings.RAY_ADDRESS.name})"
        return RayClusterError(f"{source} at {self.address} failed while {what}: {cause}")


class RayCluster(dg.ConfigurableResource):
    """The Ray cluster that trains experiments of more than one worker: the one at `address` (a Ray job API), else
    a local one on 127.0.0.1 that each such training starts and stops."""

    address: str | None = Field(default=None, description=settings.RAY_ADDRESS.description)
    startup_timeout: float = Field(default=180.0, description="seconds a local cluster may take to start")

    @contextlib.contextmanager
    def connect(self, num_cpus: int, num_gpus: int, log: Callable[[str], None]) -> Iterator[RayConnection]:
        """The cluster for a training that needs `num_cpus` CPUs and `num_gpus` GPUs: the configured one once it
        answers (`RayClusterError` naming the address if it does not), or a local one started here and stopped
        (every process of it) when the block exits, however it exits."""
        if self.address:
            address = job_api_address(self.address)
            try:
                version = probe(address)
            except urllib.error.HTTPError as error:
                raise RayClusterError(
                    f"{address} ({settings.RAY_ADDRESS.name}) answered HTTP {error.code} where a Ray job API answers "
                    "/api/version: give the Ray head's dashboard port (8265)"
                ) from None
            except (OSError, ValueError) as error:
                raise RayClusterError(
                    f"the Ray cluster at {address} ({settings.RAY_ADDRESS.name}) cannot be reached: {error}"
                ) from None
            log(f"Ray cluster at {address} (Ray {version.get('ray_version', '?')})")
            yield RayConnection(address=address, python="python")
            return
        # Oversubscribing the machine's cores is allowed (the workers then share them); Ray would otherwise wait
        # forever for CPUs that a one-node cluster will never get.
        cluster = LocalRayCluster(num_cpus=max(os.cpu_count() or 1, num_cpus), num_gpus=None if num_gpus else 0)
        log(f"starting a local Ray cluster on 127.0.0.1 ({cluster.num_cpus} CPUs); set {settings.RAY_ADDRESS.name} "
            "to use an existing one")  # fmt: skip
        cluster.start(timeout=self.startup_timeout)
        try:
            log(f"local Ray cluster at {cluster.address} ready in {cluster.startup_seconds:.1f} s")
            yield RayConnection(address=cluster.address, python=sys.executable, local=cluster)
        finally:
            cluster.stop()
            log(f"local Ray cluster at {cluster.address} stopped")


def cluster_processes(gcs_address: str) -> list[int]:
    """Pids of the live processes whose environment has `RAY_ADDRESS=gcs_address` (`LocalRayCluster` sets it for
    the whole cluster; Ray's workers and job drivers inherit it). Linux's /proc."""
    marker = f"RAY_ADDRESS={gcs_address}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, waiting for its parent to reap it
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return sorted(pid for pid in found if pid != os.getpid())


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (a run worker killed with -9), so
    `ray start --block` takes its cluster down with it instead of leaving it behind. Linux only."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
