"""The project's command line: `python scripts/cli.py --help`.

Runs with nothing but Python 3.10+: before `setup` has built the root environment (.venv, which holds click and
uv), only `setup` works, and it bootstraps that environment first, then re-runs itself inside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_VENV = ROOT / ".venv"
ROOT_PYTHON = ROOT_VENV / "bin" / "python"
ROOT_REQUIREMENTS = ROOT / "scripts" / "requirements.lock"


UV_VERSION = "0.13.9"


def pip_index_flags() -> list[str]:
    """uv flags that mirror the user's pip configuration (index-url, extra-index-url, find-links).

    uv does not read pip.conf or PIP_* variables; without this, a machine whose packages come from a mirror or a
    local wheel folder would resolve differently under uv than under pip. `unsafe-best-match` is pip's own rule:
    the best version across all indexes, not the first index that has the package.
    """
    listing = subprocess.run(
        [str(ROOT_PYTHON), "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("index-url", "extra-index-url", "find-links"):
            settings[option] = value.strip().strip("'\"")  # later lines (env, user) override earlier ones
    for option in ("index-url", "extra-index-url", "find-links"):
        env_value = os.environ.get("PIP_" + option.upper().replace("-", "_"))
        if env_value:
            settings[option] = env_value
    flags = ["--index-strategy", "unsafe-best-match"]
    if "index-url" in settings:
        flags += ["--default-index", settings["index-url"]]
    for url in settings.get("extra-index-url", "").split():
        flags += ["--index", url]
    for location in settings.get("find-links", "").split():
        flags += ["--find-links", location]
    return flags


def _bootstrap() -> None:
    """Create .venv, install uv into it with pip (which reads the user's pip configuration), then the root
    requirements with uv, and re-run this command inside .venv."""
    if sys.version_info < (3, 10):  # noqa: UP036 -- this runs on whatever Python the user has
        sys.exit(f"Python 3.10 or newer is needed; this is {sys.version.split()[0]}")
    if not (ROOT_VENV / "bin" / "uv").exists():
        print(f"bootstrapping the root environment in {ROOT_VENV.name}/ (uv {UV_VERSION}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ROOT_VENV)], check=True)
        pip = [str(ROOT_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"uv=={UV_VERSION}"], check=True)
    subprocess.run(
        [
            str(ROOT_VENV / "bin" / "uv"),
            "pip",
            "install",
            "--quiet",
            *pip_index_flags(),
            "--python",
            str(ROOT_PYTHON),
            "-r",
            str(ROOT_REQUIREMENTS),
        ],
        check=True,
    )
    os.execv(str(ROOT_PYTHON), [str(ROOT_PYTHON), *sys.argv])


def _in_root_venv() -> bool:
    return Path(sys.prefix).resolve() == ROOT_VENV.resolve()


# Every command runs inside .venv: its click, uv and dagster are the pinned ones, whatever the caller's Python has.
if not _in_root_venv():
    if sys.argv[1:2] == ["setup"]:
        _bootstrap()
    elif ROOT_PYTHON.exists():
        os.execv(str(ROOT_PYTHON), [str(ROOT_PYTHON), *sys.argv])
    sys.exit(
        "This project is not set up yet. Run:\n\n    python scripts/cli.py setup\n\n"
        "Commands: setup, dev, run, serve, test, lint, lock, clean (each with --help once set up)."
    )

# After this point we run inside .venv (or another environment with click); stdlib and click only at import.
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import click  # noqa: E402

# Tests point these at temporary folders; users normally leave them alone.
DAGSTER_HOME = Path(os.environ.get("ML_PIPELINE_DAGSTER_HOME", ROOT / "example_persistent_home"))


@dataclass(frozen=True)
class Environment:
    """One virtual environment: a code location's, or the shared package's (for its tests)."""

    name: str
    folder: str
    package: str | None  # the importable package; None for the shared package

    @property
    def path(self) -> Path:
        return ROOT / self.folder

    @property
    def venv(self) -> Path:
        return self.path / ".venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def lock(self) -> Path:
        return self.path / "requirements.lock"

    @property
    def module(self) -> str:
        return f"{self.package}.definitions"


LOCATIONS = (
    Environment("1_etl", "1_etl_code_location", "etl_code_location"),
    Environment("2_model", "2_model_code_location", "model_code_location"),
    Environment("3_evaluate", "3_evaluate_code_location", "evaluate_code_location"),
    Environment("4_deploy", "4_deploy_code_location", "deploy_code_location"),
)
SHARED = Environment("shared", "shared_code_location", None)
ENVIRONMENTS = (SHARED, *LOCATIONS)
BY_NAME = {env.name: env for env in ENVIRONMENTS} | {env.folder: env for env in ENVIRONMENTS}


def fail(message: str, code: int = 1) -> None:
    """Print an error in red and exit."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


# ----------------------------------------------------------------------------------------------------------- uv


def uv(*args: str, python: Path | None = None, quiet: bool = True) -> None:
    """Run uv from the root environment, against `python`'s environment."""
    command = [str(ROOT_VENV / "bin" / "uv"), *args]
    if python is not None:
        command += ["--python", str(python)]
    if quiet:
        command.append("--quiet")
    subprocess.run(command, check=True, cwd=ROOT)


def fingerprint(env: Environment) -> str:
    """A hash of everything that decides an environment's contents; unchanged → setup skips it."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for path in (env.lock, env.path / "pyproject.toml", SHARED.path / "pyproject.toml"):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def build_environment(env: Environment, force: bool) -> str:
    """Create or update one environment with uv; returns what happened."""
    stamp = env.venv / ".setup-fingerprint"
    wanted = fingerprint(env)
    if not force and env.python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return "up to date"
    if not env.lock.exists():
        fail(f"{env.lock.relative_to(ROOT)} is missing: run `python scripts/cli.py lock`")
    if not env.python.exists():
        uv("venv", str(env.venv), "--python", sys.executable, "--seed")
    flags = pip_index_flags()
    # `install -r` (not `sync`) so that a CUDA build of torch on a GPU machine still pulls its nvidia-* wheels.
    uv("pip", "install", *flags, "-r", str(env.lock), python=env.python)
    editables = ["-e", str(SHARED.path)] + (["-e", str(env.path)] if env.package else [])
    uv("pip", "install", *flags, "--no-deps", *editables, python=env.python)
    stamp.write_text(wanted)
    return "built"


# ----------------------------------------------------------------------------------------------------------- CLI


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Dagster ML pipeline template: four code locations, one lineage graph from raw text to a served model."""


@cli.command()
@click.option("--force", is_flag=True, help="Reinstall every environment even if nothing changed.")
def setup(force: bool) -> None:
    """Create one virtual environment per code location (and the shared package's), with uv.

    Idempotent: an environment whose lock file and pyproject are unchanged is skipped, so a re-run takes seconds.
    """
    start = time.perf_counter()
    click.echo(f"root environment: {ROOT_VENV.relative_to(ROOT)} (click, uv, dagster-webserver, dg)")
    for env in ENVIRONMENTS:
        t0 = time.perf_counter()
        click.echo(f"  {env.name:<11} {env.venv.relative_to(ROOT)} ... ", nl=False)
        try:
            status = build_environment(env, force)
        except subprocess.CalledProcessError as error:
            click.echo("")
            fail(f"installing {env.name} failed (exit {error.returncode}); see the uv output above")
        click.echo(f"{status} ({time.perf_counter() - t0:.1f} s)")
    ensure_dagster_home()
    click.secho(f"setup done in {time.perf_counter() - start:.1f} s. Next: python scripts/cli.py run", fg="green")


def require_setup(envs: tuple[Environment, ...] = ENVIRONMENTS) -> None:
    """Exit with a clear message if any environment is missing."""
    missing = [env.name for env in envs if not env.python.exists()]
    if missing:
        fail(f"environment(s) {', '.join(missing)} missing: run `python scripts/cli.py setup` first")


def ensure_dagster_home() -> Path:
    """The instance folder, with its dagster.yaml."""
    DAGSTER_HOME.mkdir(parents=True, exist_ok=True)
    if not (DAGSTER_HOME / "dagster.yaml").exists():
        # An instance elsewhere (ML_PIPELINE_DAGSTER_HOME) gets the same settings: run queue, pool limits.
        shutil.copyfile(ROOT / "example_persistent_home" / "dagster.yaml", DAGSTER_HOME / "dagster.yaml")
    return DAGSTER_HOME


def dagster_env() -> dict[str, str]:
    """The environment every Dagster process gets: the shared instance folder and the project root."""
    return os.environ | {"DAGSTER_HOME": str(ensure_dagster_home()), "ML_PIPELINE_PROJECT_ROOT": str(ROOT)}


def run_foreground(command: list[str], env: dict[str, str], cwd: Path = ROOT, helpers: tuple = ()) -> int:
    """Run `command` until it exits, with `helpers` ((command, cwd) pairs) beside it, all in one new process group:
    Ctrl-C (or SIGTERM) shuts down every process it started."""

    def child_setup(group: int) -> None:
        os.setpgid(0, group)
        # A background-started shell leaves SIGINT ignored; restore it so the group can be interrupted.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if sys.platform == "linux":
            # Should this CLI be killed outright (SIGKILL skips our handlers), the children get a Ctrl-C
            # instead of living on in their own process group.
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG

    started: list[subprocess.Popen] = []
    for helper_command, helper_cwd in helpers:
        group = started[0].pid if started else 0
        started.append(
            subprocess.Popen(helper_command, cwd=helper_cwd, env=env, preexec_fn=lambda g=group: child_setup(g))
        )
    group = started[0].pid if started else 0
    process = subprocess.Popen(command, cwd=cwd, env=env, preexec_fn=lambda: child_setup(group))
    group = group or process.pid

    def stop(*_: object) -> None:
        # Dagster stops its webserver, daemon and code servers on SIGINT; escalate if anything hangs.
        for sig, wait in ((signal.SIGINT, 12), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(group, sig)
                deadline = time.monotonic() + wait
                for child in (process, *started):
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(143)))
    try:
        code = process.wait()
    except KeyboardInterrupt:
        click.echo("\nshutting down ...")
        stop()
        return 130
    stop()
    return code


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@cli.command()
@click.argument("location", required=False)
@click.option("--port", default=3000, show_default=True, help="Webserver port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
def dev(location: str | None, port: int, host: str) -> None:
    """Run the Dagster UI and daemon on all four locations (or only LOCATION, e.g. 2_model).

    Each location's code server starts in its own venv, all at once (`dagster dev` on `workspace.yaml` starts
    them one after another, which takes about twice as long here); the webserver and daemon connect to them.
    """
    require_setup()
    envs = list(LOCATIONS)
    if location:
        env = BY_NAME.get(location)
        if env is None or env.package is None:
            fail(f"unknown location {location!r}; choose one of {', '.join(e.name for e in LOCATIONS)}")
        envs = [env]
    workspace, servers = ensure_dagster_home() / "workspace-dev.yaml", []
    entries = []
    for env in envs:
        server_port = free_port()
        servers.append(
            (
                [
                    *(str(env.python), "-m", "dagster", "code-server", "start", "-h", "127.0.0.1"),
                    *("-p", str(server_port), "-m", env.module, "-d", str(env.path), "--location-name", env.name),
                ],
                env.path,
            )
        )
        entries.append(
            f"  - grpc_server:\n      host: 127.0.0.1\n      port: {server_port}\n      location_name: {env.name}\n"
        )
    workspace.write_text("# Written by `cli.py dev`: code servers it started.\nload_from:\n" + "".join(entries))
    click.echo(f"Dagster UI: http://{host}:{port}  (DAGSTER_HOME={DAGSTER_HOME}; Ctrl-C stops)")
    command = [str(ROOT_VENV / "bin" / "dagster"), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    sys.exit(run_foreground(command, dagster_env(), helpers=tuple(servers)))


# -------------------------------------------------------------------------------------------------- run pipeline

_STEP_FAILURE = re.compile(r" - (?P<step>[\w.]+) - STEP_FAILURE - ")
_CHECK_FAILED = re.compile(r"Asset check '(?P<check>[^']+)' on '(?P<asset>[^']+)' did not pass")


def parse_overrides(values: tuple[str, ...]) -> dict[str, object]:
    """`key=value` pairs, values parsed as JSON when they can be (numbers, booleans), else kept as strings."""
    overrides: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--set expects key=value, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def location_run_config(env: Environment, preset: str | None, overrides: dict[str, object]) -> dict | None:
    """Run config for one location's materialization: the training config goes to the model location, and only
    what the user set, so that a plain `run` trains exactly as automation and the UI's defaults do."""
    config = ({"preset": preset} if preset else {}) | overrides
    if env.name != "2_model" or not config:
        return None
    return {"ops": {"model__trained_model": {"config": config}}}


def stale_assets(env: Environment, run_config: dict | None) -> dict[str, str]:
    """`{asset key: reason}` for the assets of one location that are stale (see shared_code_location/versions.py)."""
    command = [str(env.python), "-m", "shared_code_location.versions", env.module]
    command += ["--run-config", json.dumps(run_config or {})]
    result = subprocess.run(command, cwd=env.path, env=dagster_env(), capture_output=True, text=True)
    if result.returncode:
        fail(f"{env.name}: could not read which assets are stale:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def materialize_location(
    env: Environment, run_config: dict | None, log_path: Path, verbose: bool, selection: str = "*"
) -> list[str]:
    """Materialize `selection` (default: every asset) of one location, in its own venv, under the shared
    DAGSTER_HOME. Returns the names of what failed (steps and blocking checks), empty on success.
    """
    command = [str(env.python), "-m", "dagster", "asset", "materialize", "-m", env.module, "--select", selection]
    if run_config:
        command += ["--config-json", json.dumps(run_config)]
    failures: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=env.path, env=dagster_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if match := _CHECK_FAILED.search(line):
                failures.append(f"check {match['check']} on {match['asset']} did not pass")
            elif (match := _STEP_FAILURE.search(line)) and not any(
                match["step"].endswith(f.split()[1]) for f in failures if f.startswith("check ")
            ):
                failures.append(match["step"].replace("__", "/"))
            if verbose:
                click.echo("    " + line.rstrip())
            elif " - INFO - " in line and " - dagster - " in line and "__ASSET_JOB" in line:
                click.echo("    " + line.rstrip().split(" - ")[-1][:150])  # the assets' own progress logs
        code = process.wait()
    if code and not failures:
        failures.append(f"{env.name} (exit {code})")
    return list(dict.fromkeys(failures))


@cli.command(name="run")
@click.option(
    "--preset",
    type=click.Choice(["quick", "gpu", "tiny"]),
    default=None,
    help="Training preset (2_model); default: $ML_PIPELINE_TRAINING_PRESET, else quick.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a training hyperparameter, e.g. --set max_iters=500 (repeatable).",
)
@click.option(
    "--from", "start", default=None, help="Start at this location (e.g. 3_evaluate); earlier ones are reused."
)
@click.option("--only", default=None, help="Run only this location.")
@click.option("--force", is_flag=True, help="Rebuild every asset, stale or not.")
@click.option("-v", "--verbose", is_flag=True, help="Print Dagster's full event log.")
def run_pipeline(
    preset: str | None, overrides: tuple[str, ...], start: str | None, only: str | None, force: bool, verbose: bool
) -> None:
    """Run the whole graph headless: 1_etl → 2_model → 3_evaluate → 4_deploy, each location in its own venv.

    ETL always runs (it is what reads the input files). After it, only stale assets run: never materialized, code
    version changed, new upstream data, or other training config. With unchanged code and corpus, training is
    skipped. Runs land in the shared instance (example_persistent_home/), so they show in the UI. Stops at the
    first failure and exits non-zero, naming the failing asset or check.
    """
    require_setup(LOCATIONS)
    selected = list(LOCATIONS)
    for name, option in ((start, "--from"), (only, "--only")):
        if name and name not in BY_NAME:
            fail(f"{option}: unknown location {name!r}; choose one of {', '.join(e.name for e in LOCATIONS)}")
    if start:
        selected = selected[selected.index(BY_NAME[start]) :]
    if only:
        selected = [BY_NAME[only]]
    values = parse_overrides(overrides)
    logs = ensure_dagster_home() / "logs"
    logs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    total = time.perf_counter()
    for position, env in enumerate(selected, 1):
        click.secho(f"[{position}/{len(selected)}] {env.name}", bold=True)
        t0 = time.perf_counter()
        run_config = location_run_config(env, preset, values)
        selection = "*"
        if not force and env is not LOCATIONS[0]:
            stale = stale_assets(env, run_config)
            if not stale:
                click.secho("    up to date: nothing stale, skipped", fg="green")
                continue
            for key, reason in stale.items():
                click.echo(f"    {key}: {reason}")
            selection = ",".join(stale)
        failures = materialize_location(env, run_config, logs / f"{stamp}-{env.name}.log", verbose, selection)
        if failures:
            fail(f"{env.name} failed: {'; '.join(failures)} (log: {logs / f'{stamp}-{env.name}.log'})")
        click.secho(f"    ok in {time.perf_counter() - t0:.1f} s", fg="green")
    latest = Path(os.environ.get("ML_PIPELINE_OUTPUT_DIR", ROOT / "example_output_resources")) / "latest.json"
    if latest.exists() and selected[-1] is LOCATIONS[-1]:
        click.echo(f"latest release: {latest.parent / json.loads(latest.read_text())['path']}")
    click.secho(f"pipeline done in {time.perf_counter() - total:.1f} s", fg="green")


# ---------------------------------------------------------------------------------------------------------- serve


@cli.command()
@click.option("--release", default=None, help="Release version or folder (default: the latest good release).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True)
def serve(release: str | None, host: str, port: int) -> None:
    """Serve the released model over HTTP with ONNX Runtime (POST /generate, GET /health, /metrics, /docs)."""
    deploy = BY_NAME["4_deploy"]
    require_setup((deploy,))
    command = [str(deploy.python), "-m", "deploy_code_location.serving", "--host", host, "--port", str(port)]
    if release:
        command += ["--release", release]
    sys.exit(run_foreground(command, dagster_env(), cwd=deploy.path))


# ----------------------------------------------------------------------------------------------------------- test


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("-k", "keyword", default=None, help="Only tests matching this pytest expression.")
@click.option("--no-e2e", is_flag=True, help="Skip the cross-location tests in tests/ (end to end, UI, Dagster+).")
def test(targets: tuple[str, ...], keyword: str | None, no_e2e: bool) -> None:
    """Run each location's tests and the shared package's, each in its own venv, then the cross-location tests.

    TARGETS: environment names (shared, 1_etl, ...) or `e2e`; default: all.
    """
    require_setup()
    chosen = [BY_NAME[t] for t in targets if t in BY_NAME]
    unknown = [t for t in targets if t not in BY_NAME and t != "e2e"]
    if unknown:
        fail(f"unknown test target(s) {unknown}; choose from {', '.join(e.name for e in ENVIRONMENTS)}, e2e")
    suites = [(env.name, env.python, env.path) for env in (chosen or ([] if targets else ENVIRONMENTS))]
    if (not targets and not no_e2e) or "e2e" in targets:
        suites.append(("e2e", ROOT_PYTHON, ROOT))
    results = []
    for name, python, cwd in suites:
        click.secho(f"==> {name}", bold=True)
        command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
        if keyword:
            command += ["-k", keyword]
        t0 = time.perf_counter()
        code = subprocess.run(command, cwd=cwd, env=os.environ | {"ML_PIPELINE_PROJECT_ROOT": str(ROOT)}).returncode
        # pytest exits 5 when -k selects nothing in a suite: that suite has nothing to say, not a failure.
        results.append((name, code in (0, 5), time.perf_counter() - t0))
    click.echo("\nsummary:")
    for name, ok, seconds in results:
        click.secho(f"  {name:<11} {'passed' if ok else 'FAILED'} ({seconds:.1f} s)", fg="green" if ok else "red")
    failed = sum(1 for _, ok, _ in results if not ok)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--fix", is_flag=True, help="Apply fixes and format.")
def lint(fix: bool) -> None:
    """Lint and format-check the whole repository with ruff."""
    ruff = str(ROOT_VENV / "bin" / "ruff")
    check = subprocess.run([ruff, "check", *(["--fix"] if fix else []), "."], cwd=ROOT).returncode
    fmt = subprocess.run([ruff, "format", *([] if fix else ["--check"]), "."], cwd=ROOT).returncode
    sys.exit(1 if check or fmt else 0)


@cli.command()
@click.option("--upgrade", is_flag=True, help="Allow newer versions of unpinned transitive dependencies.")
def lock(upgrade: bool) -> None:
    """Re-resolve every requirements.lock from the pyproject pins (run after editing dependencies)."""
    flags = pip_index_flags()
    uv(
        "pip",
        "compile",
        *flags,
        *(["--upgrade"] if upgrade else []),
        "--python-version",
        "3.11",
        "scripts/requirements.in",
        "-o",
        "scripts/requirements.lock",
    )
    for env in ENVIRONMENTS:
        uv(
            "pip",
            "compile",
            *flags,
            *(["--upgrade"] if upgrade else []),
            "--python-version",
            "3.11",
            f"{env.folder}/pyproject.toml",
            "--all-extras",
            "--no-emit-package",
            "shared-code-location",
            "-o",
            f"{env.folder}/requirements.lock",
        )  # relative paths: the lock's header names no local folder
        # A lock names public versions only: `torch==2.13.0+cpu` from a local wheel folder would not resolve
        # elsewhere, while `torch==2.13.0` matches both the local CPU build and PyPI's.
        text = re.sub(r"^(\S+==[^+\s]+)\+\S+", r"\1", env.lock.read_text(), flags=re.MULTILINE)
        env.lock.write_text(re.sub(r"^-e .*\n|^\S+ @ file://.*\n", "", text, flags=re.MULTILINE))
        click.echo(f"locked {env.lock.relative_to(ROOT)}")
    ROOT_REQUIREMENTS.write_text(re.sub(r"^(\S+==[^+\s]+)\+\S+", r"\1", ROOT_REQUIREMENTS.read_text(), flags=re.M))


@cli.command()
@click.option("--data", is_flag=True, help="Also delete user data: Dagster runs, pipeline storage and releases.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting user data.")
def clean(data: bool, yes: bool) -> None:
    """Remove the location venvs, caches and build output (keeps the root .venv that runs this CLI)."""
    doomed = [env.venv for env in ENVIRONMENTS]
    for pattern in ("**/__pycache__", "**/*.egg-info", "**/.pytest_cache", "**/.ruff_cache", "**/build"):
        doomed += [p for p in ROOT.glob(pattern) if ".venv" not in p.parts]
    if data:
        if not yes and not click.confirm("Delete Dagster runs, pipeline storage and all releases?"):
            fail("nothing deleted")
        doomed += [p for p in DAGSTER_HOME.iterdir() if p.name != "dagster.yaml"]
        doomed += [p for p in (ROOT / "example_output_resources").iterdir() if p.name != "README.md"]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    click.echo(
        f"removed {len([p for p in doomed if not p.exists()])} item(s); the root .venv stays (delete it by hand)"
    )


if __name__ == "__main__":
    cli()
