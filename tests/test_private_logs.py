"""The project's logs stay on the machine: Dagster's webserver uploads `$DAGSTER_HOME/logs/` on its own (its
"telemetry-upload" thread renames the folder `.logs_queue/` and POSTs each file), so the CLI writes elsewhere, and
the processes it starts run with that thread off. The real webserver, against a local HTTP server standing in for
Dagster's telemetry endpoint (`DAGSTER_TELEMETRY_URL`), so that nothing leaves this machine even where it could."""

import os
import shutil
import subprocess
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT
from pipeline_cli.instance import DISABLE_UPLOAD_VARIABLE, TRACKED_DAGSTER_YAML, log_folder, telemetry_env
from shared_code_location.runtime.net import free_port, http_ok, wait_until

WEBSERVER = ROOT / ".venv" / "bin" / "dagster-webserver"


@pytest.fixture
def telemetry_endpoint():
    """A local stand-in for Dagster's telemetry server: (its URL, the bodies POSTed to it, decompressed)."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(zlib.decompress(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/actions", received
    server.shutdown()


def _instance_with_logs(home):
    """An instance folder holding a log where the CLI writes its logs, and a file in Dagster's own `logs/`."""
    home.mkdir(parents=True)
    shutil.copyfile(TRACKED_DAGSTER_YAML, home / "dagster.yaml")  # `telemetry: enabled: false`, as the CLI's
    pipeline_log = log_folder(home) / "20260101-000000-2_model.log"
    pipeline_log.parent.mkdir(exist_ok=True)
    pipeline_log.write_text(f"experiment quick: {{'n_layer': 3}} private training output of {home.name}\n")
    dagster_log = home / "logs" / "event.log"
    dagster_log.parent.mkdir(exist_ok=True)
    dagster_log.write_text(f'{{"action": "a line of Dagster\'s own telemetry log in {home.name}"}}\n')
    return pipeline_log, dagster_log


def _webserver(env: dict[str, str]) -> subprocess.Popen:
    port = free_port()
    command = [str(WEBSERVER), "--empty-workspace", "-h", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.url = f"http://127.0.0.1:{port}/server_info"
    return process


def test_the_webserver_uploads_dagsters_log_folder_and_the_pipelines_logs_stay_put(tmp_path, telemetry_endpoint):
    url, received = telemetry_endpoint
    plain_home, cli_home = tmp_path / "plain", tmp_path / "cli"
    plain_logs, cli_logs = _instance_with_logs(plain_home), _instance_with_logs(cli_home)
    before = [path.read_text() for path in (*plain_logs, *cli_logs)]
    # Dagster's webserver as it starts anywhere (its upload thread on, whatever dagster.yaml says), and as the CLI
    # starts it: side by side, each on its own instance, both reporting to the stand-in.
    outside = {k: v for k, v in os.environ.items() if k != DISABLE_UPLOAD_VARIABLE}
    cli_env = os.environ | {"DAGSTER_HOME": str(cli_home)} | telemetry_env(cli_home)
    servers = [
        _webserver(outside | {"DAGSTER_HOME": str(plain_home), "DAGSTER_TELEMETRY_URL": url}),
        _webserver(cli_env | {"DAGSTER_TELEMETRY_URL": url}),
    ]
    try:
        for server in servers:
            assert wait_until(lambda s=server: http_ok(s.url), 90, lambda s=server: s.poll() is None), "no webserver"
        # The thread on: on every start it uploads at once, before the server answers.
        assert wait_until(lambda: received, 10), "the upload thread never ran: this test proves nothing"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    # Dagster's own folder was taken, and only the plain webserver's ...
    assert [b"own telemetry log in plain" in body for body in received] == [True]
    assert not plain_logs[1].exists() and (plain_home / ".logs_queue").is_dir()
    # ... and the pipeline's logs are where they were, unread; under the CLI's environment nothing was taken.
    assert [path.read_text() if path.exists() else None for path in (*plain_logs[:1], *cli_logs)] == [
        before[0],
        *before[2:],
    ]
    assert not any(b"private training output" in body for body in received)
