"""What a code location tells the CLI, and how the CLI runs it: `python -m shared_code_location.runtime.runs`.

The CLI knows nothing about what a location contains. It runs this module in the location's own venv:

- `describe MODULE` prints the location's run-config knobs: for every op of a materializable asset that takes
  config, its fields and, where a field is a choice (a `Literal`, such as a preset), the allowed values.
- `run MODULE --options JSON --report FILE` loads the location's definitions and validates them as `dg check defs`
  does, maps the user's options (`{"preset": ..., "set": {field: value}}`) to run config for the ops whose config
  has those fields, works out which assets are stale (`staleness.py`), runs them against the instance in
  `$DAGSTER_HOME` as `dagster asset materialize` would, and writes a report built from Dagster's run and check
  events: what ran, what failed and why (the exception the asset raised, the check that did not pass and what it
  saw), and each asset's one-line `summary` metadata. With `--wait`, it says on stdout that it loaded (a `READY`
  line with its config fields), then waits for `go` on stdin: so the CLI checks every location before any runs.
  A location that does not load reports why in a few lines (`load_error`), not with the traceback.

Dagster's own log goes to stderr; stdout carries only this module's progress lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from shared_code_location.contract.asset_keys import SUMMARY_METADATA_KEY
from shared_code_location.contract.corpus_files import CORPUS_FILES, location_files
from shared_code_location.contract.experiments import EXPERIMENTS, declared_experiments, sync_partitions
from shared_code_location.runtime.placement import unrunnable
from shared_code_location.runtime.staleness import Target, op_defs, stale_assets, waits_on_upstream

#: The line a location prints on stdout once its definitions loaded, before the JSON of its config fields.
READY = "READY "

#: How a progress line names one partition of each kind.
_PARTITION_NOUN = {EXPERIMENTS.name: "experiment", CORPUS_FILES.name: "file"}


def _field_choices(config_type: Any) -> list[str] | None:
    """The allowed values of an enum config field (also when it is optional), else None."""
    inner = getattr(config_type, "inner_type", config_type)  # Noneable wraps the enum
    values = getattr(inner, "enum_values", None)
    return [value.config_value for value in values] if values else None


def config_fields(defs: dg.Definitions) -> dict[str, dict[str, dict[str, Any]]]:
    """`{op name: {field: {"choices": [...] or None}}}` for the ops of `defs`' assets that take config."""
    graph = defs.resolve_asset_graph()
    knobs: dict[str, dict[str, dict[str, Any]]] = {}
    for key in graph.materializable_asset_keys:
        for op in op_defs(defs, key):
            schema = op.config_schema
            if schema is None or not hasattr(schema.config_type, "fields"):
                continue
            knobs[op.name] = {
                name: {"choices": _field_choices(field.config_type)}
                for name, field in schema.config_type.fields.items()
            }
    return knobs


def run_config_for(defs: dg.Definitions, options: Mapping[str, Any]) -> dict[str, Any]:
    """Run config that gives `options["preset"]` and every `options["set"]` field to each op that has that field.

    Raises `ValueError` naming the choices when a preset or a field value is not one the op allows.
    """
    wanted = dict(options.get("set") or {})
    if options.get("preset"):
        wanted["preset"] = options["preset"]
    ops: dict[str, Any] = {}
    for op_name, fields in config_fields(defs).items():
        config = {name: value for name, value in wanted.items() if name in fields}
        for name, value in config.items():
            choices = fields[name]["choices"]
            if choices is not None and value not in choices:
                raise ValueError(f"{op_name}: {name}={value!r} is not one of {', '.join(choices)}")
        if config:
            ops[op_name] = {"config": config}
    return {"ops": ops} if ops else {}


def _error_cause(error: Any) -> str:
    """The message of the first error in the chain that is not Dagster's wrapper around user code."""
    while error.cause is not None and error.cls_name and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message.strip()


def run_report(result: dg.ExecuteJobResult, partition: str | None = None) -> dict[str, Any]:
    """What ran, what failed and why, from the run's events (of one `partition`, named in its failures)."""
    failures: list[dict[str, Any]] = []
    failed_checks: set[str] = set()
    materialized: list[dict[str, Any]] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed_checks.add(evaluation.asset_key.to_user_string())
                failures.append(
                    {
                        "check": evaluation.check_name,
                        "asset": evaluation.asset_key.to_user_string(),
                        "blocking": bool(evaluation.blocking),
                        "description": evaluation.description,
                        "metadata": {k: _metadata_text(v) for k, v in (evaluation.metadata or {}).items()},
                    }
                )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError" and failed_checks:
                continue  # the failed blocking check above says more
            step = event.step_key + (f"[{partition}]" if partition is not None else "")
            failures.append({"step": step, "error": _error_cause(error) if error else "unknown error"})
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            summary = materialization.metadata.get(SUMMARY_METADATA_KEY)
            materialized.append(
                {
                    "asset": materialization.asset_key.to_user_string(),
                    "summary": _metadata_text(summary) if summary is not None else None,
                }
            )
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not failures:
            failures.append({"run": result.run_id, "error": event.message or "run failed"})
    return {"run_id": result.run_id, "success": result.success, "failures": failures, "materialized": materialized}


def _metadata_text(value: Any) -> str:
    raw = getattr(value, "value", value)
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


#: The job a CLI run executes: the location's stale assets (the unpartitioned ones, or one experiment's partition).
CLI_JOB_NAME = "cli_run"


def materialize(
    defs: dg.Definitions,
    keys: list[dg.AssetKey],
    run_config: Mapping[str, Any],
    instance: dg.DagsterInstance,
    partition: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Run `keys` of `defs` (one `partition` of them when given) against `instance`, in this process, through
    Dagster's public API: a job of those assets and their checks, with the location's resources and executor, its
    log on the console (stderr) and the assets' own lines echoed as progress (stdout)."""
    run_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources=defs.resources,
        executor=defs.executor,
        jobs=[dg.define_asset_job(CLI_JOB_NAME, selection=keys)],
        loggers={"console": dg.colored_console_logger, "progress": _progress_logger},
    )
    loggers = {"loggers": {"console": {}, "progress": {}}}  # a job's loggers run only when its config names them
    _ABANDONED.clear()
    result = run_defs.resolve_job_def(CLI_JOB_NAME).execute_in_process(
        run_config=dict(run_config) | loggers, instance=instance, partition_key=partition, raise_on_error=False
    )
    if _ABANDONED:
        shown = ", ".join(_ABANDONED[:4]) + (f" and {len(_ABANDONED) - 4} more" if len(_ABANDONED) > 4 else "")
        _progress(f"not run, as a step they need failed: {len(_ABANDONED)} step(s) ({shown})"[:200])
    return result


def _progress(line: str) -> None:
    print(line, flush=True)


#: Dagster's line for each step it does not run because a step it needs failed or was not run either.
_NOT_EXECUTING = re.compile(r"^Dependencies for step \S+ .*\. Not executing\.$")
#: The steps of the current run that Dagster did not run for that reason: said in one line at the end.
_ABANDONED: list[str] = []


class _UserLogEcho(logging.Handler):
    """Echoes the assets' own `context.log.info` lines (training progress) as progress lines; Dagster's line for
    each step not run after a failure is collected instead (`_ABANDONED`), to be said once."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is None and record.levelno >= logging.INFO and meta.get("step_key"):
            message, step = meta.get("orig_message", record.getMessage()), meta["step_key"].replace("__", "/")
            if _NOT_EXECUTING.match(message):
                _ABANDONED.append(step)
            else:
                _progress(f"{step}: {message}"[:200])


@dg.logger(description="The assets' own log lines (training progress) as the CLI's progress lines, on stdout.")
def _progress_logger(_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("ml_pipeline.progress", level=logging.INFO)
    logger.addHandler(_UserLogEcho())
    return logger


def load(module: str) -> dg.Definitions:
    """The `Definitions` of location `module`, checked as `dg check defs` checks them: loaded (component YAML
    included) and validated (jobs, resources, checks), so that a mistake fails here, before anything runs."""
    defs = importlib.import_module(module).defs
    dg.Definitions.validate_loadable(defs)
    return defs


def load_error(error: BaseException) -> str:
    """What went wrong loading a location, in a few lines instead of a traceback: the innermost error of the chain
    (what the user can fix: a field of a YAML entry, a name in their code) with the place in the project that
    raised it, then what Dagster was doing (its first line)."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    inner = chain[-1]
    frames = [f for f in traceback.extract_tb(inner.__traceback__) if "site-packages" not in f.filename]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    lines = [f"{type(inner).__name__}: {str(inner).strip()}{where}"]
    if inner is not error:
        lines.append(f"while: {str(error).strip().splitlines()[0]}")
    return "\n".join(lines)


def run(defs: dg.Definitions, options: Mapping[str, Any], force: bool) -> dict[str, Any]:
    """Plan and run one location against the instance in `$DAGSTER_HOME`; the report the CLI prints. See
    `run_definitions`."""
    with dg.DagsterInstance.get() as instance:
        return run_definitions(defs, options, force, instance)


def run_definitions(
    defs: dg.Definitions, options: Mapping[str, Any], force: bool, instance: dg.DagsterInstance
) -> dict[str, Any]:
    """Plan and run the stale assets of `defs` against `instance`; the report the CLI prints.

    First the dynamic partitions are made to match what declares them (the experiments of the YAML; the files of
    the input folder). `options["experiment"]` restricts the assets partitioned by experiment to that one.

    Runs in waves: first what is stale for its own reasons, in dependency order, one run per partition (a run
    materializes one partition: the files one by one, then the step that combines them); a failure stops what
    depends on it. Then it plans again for what was stale only because an upstream asset it just ran is rebuilt:
    what that upstream left with its data version (the leaderboard, its winner unchanged) is then up to date, so
    nothing is re-exported or re-released for a loser.
    """
    try:
        run_config = run_config_for(defs, options)
    except ValueError as error:
        return {"success": False, "failures": [{"error": str(error)}], "stale": {}}
    experiment = options.get("experiment")
    try:
        files = location_files(defs)
    except (OSError, ValueError) as error:  # no input folder, no file in it, a file no partition can be named after
        return {"success": False, "failures": [{"error": str(error)}], "stale": {}}
    sources: dict[str, dict[str, str]] = {}
    for partitions, declared in ((EXPERIMENTS, declared_experiments(defs)), (CORPUS_FILES, files)):
        if partitions is CORPUS_FILES and declared is not None:
            sources[CORPUS_FILES.name] = declared
        if declared:
            added, removed = sync_partitions(instance, declared, partitions)
            noun = _PARTITION_NOUN[partitions.name] + "s"
            for verb, names in (("added", added), ("removed", removed)):
                if names:
                    _progress(f"{noun} {verb}: {', '.join(names)}")
    graph = defs.resolve_asset_graph()
    by_experiment = any(graph.get(key).partitions_def == EXPERIMENTS for key in graph.materializable_asset_keys)
    known = instance.get_dynamic_partitions(EXPERIMENTS.name)
    if experiment and by_experiment and experiment not in known:
        error = f"no experiment named {experiment!r}; the experiments are: {', '.join(known) or 'none yet'}"
        return {"success": False, "failures": [{"error": error}], "stale": {}}
    partitions = {EXPERIMENTS.name: [experiment]} if experiment else None
    if force:
        stale = {
            Target(key, p): "forced"
            for key in graph.toposorted_asset_keys
            if key in graph.materializable_asset_keys
            for p in _partitions_of(graph.get(key).partitions_def, instance, partitions)
        }
    else:
        stale = stale_assets(defs, instance, run_config, partitions, sources)
    # What this machine cannot run (a GPU experiment on a CPU-only machine) is skipped with one line.
    for target, why in unrunnable(defs, instance, stale, run_config).items():
        _progress(f"{target}: skipped, {why}")
        del stale[target]
    report: dict[str, Any] = {"stale": {str(target): why for target, why in stale.items()}}
    reports: list[dict[str, Any]] = []
    settled: set[Target] = set()
    kept: list[Target] = []  # stale only for an upstream rebuild, which kept its data version
    while stale:
        # The first stale target in dependency order never waits on another, so a wave is never empty.
        wave = {target: why for target, why in stale.items() if not waits_on_upstream(why)} or stale
        for target, why in wave.items():
            _progress(f"{target}: {why}")
        ran = _run_wave(defs, graph, wave, run_config, instance)
        reports += ran
        settled |= set(wave)
        if not all(r["success"] for r in ran):
            break
        waiting = [target for target in stale if target not in settled]
        replanned = stale_assets(defs, instance, run_config, partitions, sources, settled) if waiting else {}
        stale = {target: why for target, why in replanned.items() if target in waiting}
        kept += [target for target in waiting if target not in stale]
    if kept:
        names = ", ".join(map(str, kept))
        _progress(f"up to date after all, as what they read kept its data version: {names}")
    if not reports:
        return report | {"success": True, "failures": [], "materialized": []}
    return report | {
        "run_id": ", ".join(r["run_id"] for r in reports),
        "success": all(r["success"] for r in reports),
        "failures": [failure for r in reports for failure in r["failures"]],
        "materialized": [entry for r in reports for entry in r["materialized"]],
    }


def _partitions_name(graph: Any, key: dg.AssetKey) -> str | None:
    return getattr(graph.get(key).partitions_def, "name", None)


def _levels(graph: Any, targets: Iterable[Target]) -> list[list[Target]]:
    """`targets` in dependency order, cut wherever the partitioning changes: the assets of one level run
    together, partition by partition, and each level only once the one before it succeeded."""
    targets = list(targets)
    levels: list[list[Target]] = []
    last: object = object()
    for key in graph.toposorted_asset_keys:
        of_key = [target for target in targets if target.key == key]
        if not of_key:
            continue
        partitioning = _partitions_name(graph, key) if graph.get(key).partitions_def is not None else None
        if not levels or partitioning != last:
            levels.append([])
        levels[-1] += of_key
        last = partitioning
    return levels


def _run_wave(
    defs: dg.Definitions,
    graph: Any,
    wave: Mapping[Target, str],
    run_config: Mapping[str, Any],
    instance: dg.DagsterInstance,
) -> list[dict[str, Any]]:
    """Materialize `wave` level by level (`_levels`): one run for a level's unpartitioned assets, or one per
    partition of its partitioned ones; a level runs only once the one before it succeeded. Their reports, each
    failure naming its partition."""
    reports: list[dict[str, Any]] = []
    for level in _levels(graph, wave):
        batches: dict[str | None, list[dg.AssetKey]] = {}
        for target in level:
            batches.setdefault(target.partition, []).append(target.key)
        runs = []
        for partition, keys in sorted(batches.items(), key=lambda item: item[0] or ""):
            if partition is not None:
                _progress(f"{_PARTITION_NOUN.get(_partitions_name(graph, keys[0]), 'partition')} {partition}")
            run = run_report(materialize(defs, keys, run_config, instance, partition), partition)
            for failure in run["failures"]:
                if partition is not None and "asset" in failure:
                    failure["asset"] += f"[{partition}]"
            runs.append(run)
        reports += runs
        if not all(r["success"] for r in runs):
            break  # what reads this level would read a failed (or the last good) value: not now
    return reports


def _partitions_of(
    partitions_def: dg.PartitionsDefinition | None,
    instance: dg.DagsterInstance,
    only: Mapping[str, list[str]] | None,
) -> list[str | None]:
    if partitions_def is None:
        return [None]
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    wanted = (only or {}).get(getattr(partitions_def, "name", None))
    return [key for key in keys if wanted is None or key in wanted]


def main() -> None:
    """`describe` or `run` one location's `Definitions`; see the module docstring."""
    parser = argparse.ArgumentParser(description="What a code location tells the CLI, and runs for it.")
    commands = parser.add_subparsers(dest="command", required=True)
    describe_parser = commands.add_parser("describe", help="print the location's run-config fields as JSON")
    describe_parser.add_argument("module")
    run_parser = commands.add_parser("run", help="run the stale assets; write a JSON report")
    run_parser.add_argument("module")
    run_parser.add_argument(
        "--options", default="{}", help='JSON: {"preset": NAME, "set": {FIELD: VALUE}, "experiment": NAME}'
    )
    run_parser.add_argument("--force", action="store_true", help="run every asset, stale or not")
    run_parser.add_argument("--report", required=True, help="file to write the JSON report to")
    run_parser.add_argument(
        "--wait",
        action="store_true",
        help=f"once loaded, print {READY.strip()} and the config fields, then wait for go",
    )
    args = parser.parse_args()
    if args.command == "describe":
        json.dump(config_fields(load(args.module)), sys.stdout)
        print()
        return
    try:
        defs = load(args.module)
    except Exception as error:
        traceback.print_exc()  # the whole of it in the log; the report says it in a few lines
        report = {"success": False, "load_error": load_error(error), "failures": [{"error": load_error(error)}]}
        Path(args.report).write_text(json.dumps(report), encoding="utf-8")
        sys.exit(1)
    if args.wait:
        _progress(READY + json.dumps(config_fields(defs)))
        if sys.stdin.readline().strip() != "go":
            sys.exit(0)  # the CLI stopped before this location's turn (another one did not load)
    report = run(defs, json.loads(args.options), args.force)
    Path(args.report).write_text(json.dumps(report), encoding="utf-8")
    sys.exit(0 if report["success"] else 1)


if __name__ == "__main__":
    main()
