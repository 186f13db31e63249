"""`cli.py run`: every location in pipeline order, each in its own venv, asking the location what to run.

The CLI knows no asset, op or preset. Each location answers through `python -m shared_code_location.runtime.runs`:
which of its ops take the user's `--preset` and `--set` fields (and which values they allow), which assets are stale
and why, and, from Dagster's run and check events, what failed and the cause. Every location's process starts at
once and loads its definitions before any of them runs: a mistake in any location stops the run before the first.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from pipeline_cli.instance import dagster_env, ensure_dagster_home, log_folder
from pipeline_cli.locations import Environment
from shared_code_location import settings

_RUNS = "shared_code_location.runtime.runs"
#: What a location prints once loaded, before its config fields (shared_code_location.runtime.runs.READY).
READY = "READY "


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


def check_options(knobs: dict[str, dict[str, dict[str, Any]]], options: dict[str, Any]) -> None:
    """Fail before anything runs when `--preset` or a `--set` field fits no op of the selected locations, or a
    value is not among a field's choices. `knobs`: `{location: {op: {field: spec}}}`, as each location reported."""
    wanted = dict(options.get("set") or {}) | ({"preset": options["preset"]} if options.get("preset") else {})
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


class LocationRun:
    """One location's `runs run --wait` process: started at once, so that every location loads (and its YAML and
    definitions are checked) before any of them runs; told to go in its turn."""

    def __init__(self, env: Environment, options: dict[str, Any], force: bool, log_path: Path, verbose: bool):
        self.env, self.log_path, self.verbose = env, log_path, verbose
        self.went = False
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as report_file:
            self.report_path = Path(report_file.name)
        command = [str(env.python), "-m", _RUNS, "run", env.module, "--options", json.dumps(options), "--wait"]
        command += ["--report", str(self.report_path), *(["--force"] if force else [])]
        self.log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 -- closed in finish()
        self.process = subprocess.Popen(
            command, cwd=env.path, env=dagster_env(), text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.copier = threading.Thread(target=self._copy_log, daemon=True)
        self.copier.start()

    def _copy_log(self) -> None:
        for line in self.process.stderr:
            self.log.write(line)
            if self.verbose:
                click.echo("    | " + line.rstrip(), err=True)

    def loaded(self) -> dict[str, dict[str, Any]] | None:
        """Wait until the location has loaded: its config fields, or None if it did not load (see `finish`)."""
        for line in self.process.stdout:
            if line.startswith(READY):
                return json.loads(line.removeprefix(READY))
        return None

    def go(self) -> dict[str, Any]:
        """Let it run; print its progress lines as they come; its report."""
        self.went = True
        self.process.stdin.write("go\n")
        self.process.stdin.close()
        for line in self.process.stdout:
            click.echo("    " + line.rstrip())
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Its report, once it exited (a process not told to go exits when its stdin closes)."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        code = self.process.wait()
        self.copier.join()
        self.log.close()
        if not self.went and not self.log_path.stat().st_size:  # loaded, then told to stop: nothing to keep
            self.log_path.unlink()
        try:
            report = json.loads(self.report_path.read_text() or "null")
        except (OSError, json.JSONDecodeError):
            report = None
        finally:
            self.report_path.unlink(missing_ok=True)
        if report is None:  # the process died before it could report: show the end of its log
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:] if self.log_path.exists() else ""
            report = {"success": False, "failures": [{"error": f"exited with code {code} before reporting:\n{tail}"}]}
        return report


def _dg_check_yaml(env: Environment) -> str | None:
    """What `dg check yaml` says of `env`'s component YAML when it finds a mistake (file, line, entry and field,
    with the lines around it), else None. Run only once a location failed to load: it costs seconds."""
    dg = env.venv / "bin" / "dg"
    if not dg.exists():
        return None
    checked = subprocess.run(
        [str(dg), "check", "yaml"], cwd=env.path, env=dagster_env(), capture_output=True, text=True
    )
    if checked.returncode == 0:
        return None
    lines = (checked.stdout + checked.stderr).splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(str(env.path))), 0)  # after dg's warnings
    return "\n".join(lines[first:]).strip() or None


def load_failure(env: Environment, report: dict[str, Any], log_path: Path) -> str:
    """Why `env` did not load: dg's own account of a YAML mistake, else the location's few lines."""
    cause = _dg_check_yaml(env) or report.get("load_error") or _failure_text(report["failures"][0])
    return (
        f"{env.name}: its definitions do not load, so nothing ran:\n{cause}\n"
        f"(check with `.venv/bin/dg check yaml` and `dg check defs` in {env.folder}/; Dagster's log: {log_path})"
    )


def run_pipeline(
    locations: list[Environment], options: dict[str, Any], force: bool, verbose: bool
) -> list[dict[str, Any]]:
    """Start every location at once, so that each loads and checks its definitions; if all load, run them in order,
    each told to go when the one before succeeded; stop at the first failure with a `PipelineError` giving its
    cause."""
    logs = log_folder(ensure_dagster_home())
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = [LocationRun(env, options, force, logs / f"{stamp}-{env.name}.log", verbose) for env in locations]
    try:
        knobs = {run.env.name: run.loaded() for run in runs}
        if broken := [run for run in runs if knobs[run.env.name] is None]:
            reports = {run.env.name: run.finish() for run in broken}
            raise PipelineError("\n".join(load_failure(r.env, reports[r.env.name], r.log_path) for r in broken))
        check_options(knobs, options)
        takes_preset = any("preset" in fields for ops in knobs.values() for fields in ops.values())
        if takes_preset and (preset := options.get("preset") or settings.TRAINING_PRESET.get()):
            source = "--preset" if options.get("preset") else settings.TRAINING_PRESET.name
            click.secho(
                f"{source} {preset}: replaces each experiment's own preset and overrides (its workers stay); a run "
                "without it retrains them with their own",
                fg="yellow",
            )
        reports = []
        for position, run in enumerate(runs, 1):
            click.secho(f"[{position}/{len(runs)}] {run.env.name}", bold=True)
            started = time.perf_counter()
            report = run.go()
            reports.append(report)
            if not report["success"]:
                causes = "\n  ".join(_failure_text(f) for f in report["failures"]) or "no cause reported"
                raise PipelineError(f"{run.env.name} failed:\n  {causes}\n(Dagster's log: {run.log_path})")
            if not report.get("stale"):
                click.secho("    up to date: nothing stale, skipped", fg="green")
                continue
            for item in report.get("materialized", []):
                if item.get("summary"):
                    click.echo(f"    {item['asset']}: {item['summary']}")
            click.secho(f"    ok in {time.perf_counter() - started:.1f} s", fg="green")
        return reports
    finally:
        for run in runs:  # those not told to go exit when their stdin closes
            if run.process.poll() is None or not run.log.closed:
                run.finish()
