"""`cli.py run`: every location in pipeline order, each in its own venv, asking the location what to run.

The CLI knows no asset, op or preset. Each location answers through `python -m shared_code_location.runtime.runs`:
which of its ops take the user's `--preset` and `--set` fields (and which values they allow), which assets are stale
and why, and, from Dagster's run and check events, what failed and the cause.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from pipeline_cli.instance import dagster_env, ensure_dagster_home, log_folder
from pipeline_cli.locations import Environment

_RUNS = "shared_code_location.runtime.runs"


class PipelineError(RuntimeError):
    """A location failed, or the user's options fit no location; the message says which and why."""


def parse_overrides(values: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs, values parsed as JSON when they can be (numbers, booleans), else kept as strings."""
    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def describe(env: Environment) -> dict[str, dict[str, Any]]:
    """`{op: {field: {"choices": ...}}}`: the run-config fields of `env`'s assets, as the location reports them."""
    result = subprocess.run(
        [str(env.python), "-m", _RUNS, "describe", env.module],
        cwd=env.path,
        env=dagster_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise PipelineError(f"{env.name}: could not load its definitions:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_options(locations: list[Environment], options: dict[str, Any]) -> None:
    """Fail before anything runs when `--preset` or a `--set` field fits no op of the selected locations, or a
    value is not among a field's choices. Asks the locations in parallel."""
    wanted = dict(options.get("set") or {}) | ({"preset": options["preset"]} if options.get("preset") else {})
    if not wanted:
        return
    with ThreadPoolExecutor(len(locations)) as pool:
        knobs = dict(zip((env.name for env in locations), pool.map(describe, locations), strict=True))
    fields = {name: spec for ops in knobs.values() for op in ops.values() for name, spec in op.items()}
    for name, value in wanted.items():
        option = "--preset" if name == "preset" else f"--set {name}"
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise PipelineError(f"{option}: no asset of {', '.join(knobs)} takes `{name}`; fields: {known}")
        if fields[name]["choices"] is not None and value not in fields[name]["choices"]:
            raise PipelineError(f"{option}: {value!r} is not one of {', '.join(map(str, fields[name]['choices']))}")


def _failure_text(failure: dict[str, Any]) -> str:
    if "check" in failure:
        seen = ", ".join(f"{k}={v}" for k, v in failure["metadata"].items())
        kind = "blocking check" if failure["blocking"] else "check"
        text = f"{kind} {failure['check']} on {failure['asset']} did not pass" + (f" ({seen})" if seen else "")
        return text + (f"\n    {failure['description']}" if failure.get("description") else "")
    if "step" in failure:
        return f"{failure['step'].replace('__', '/')}: {failure['error']}"
    return failure["error"]


def run_location(
    env: Environment, options: dict[str, Any], force: bool, log_path: Path, verbose: bool
) -> dict[str, Any]:
    """Run `env`'s stale assets (all with `force`) in its venv; its report. Progress lines print as they come,
    Dagster's log goes to `log_path` (and to the terminal with `verbose`)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as report_file:
        report_path = Path(report_file.name)
    command = [str(env.python), "-m", _RUNS, "run", env.module, "--options", json.dumps(options)]
    command += ["--report", str(report_path), *(["--force"] if force else [])]
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=env.path, env=dagster_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

        def copy_log() -> None:
            for line in process.stderr:
                log.write(line)
                if verbose:
                    click.echo("    | " + line.rstrip(), err=True)

        copier = threading.Thread(target=copy_log, daemon=True)
        copier.start()
        for line in process.stdout:
            click.echo("    " + line.rstrip())
        code = process.wait()
        copier.join()
    try:
        report = json.loads(report_path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        report = None
    finally:
        report_path.unlink(missing_ok=True)
    if report is None:  # the process died before it could report: show the end of its log
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        report = {"success": False, "failures": [{"error": f"exited with code {code} before reporting:\n{tail}"}]}
    return report


def run_pipeline(
    locations: list[Environment], options: dict[str, Any], force: bool, verbose: bool
) -> list[dict[str, Any]]:
    """Run `locations` in order; stop at the first failure with a `PipelineError` that gives its cause."""
    check_options(locations, options)
    logs = log_folder(ensure_dagster_home())
    logs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    reports = []
    for position, env in enumerate(locations, 1):
        click.secho(f"[{position}/{len(locations)}] {env.name}", bold=True)
        started = time.perf_counter()
        log_path = logs / f"{stamp}-{env.name}.log"
        report = run_location(env, options, force, log_path, verbose)
        reports.append(report)
        if not report["success"]:
            causes = "\n  ".join(_failure_text(f) for f in report["failures"]) or "no cause reported"
            raise PipelineError(f"{env.name} failed:\n  {causes}\n(Dagster's log: {log_path})")
        if not report.get("stale"):
            click.secho("    up to date: nothing stale, skipped", fg="green")
            continue
        for item in report.get("materialized", []):
            if item.get("summary"):
                click.echo(f"    {item['asset']}: {item['summary']}")
        click.secho(f"    ok in {time.perf_counter() - started:.1f} s", fg="green")
    return reports
